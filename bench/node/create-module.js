// The Node.js peer of create-module: make sure a device and a module exist
// (create them with hub-generated keys, or read them back when the hub
// answers 409) and print the module connection string as JSON.
//
//   node create-module.js DEVICE MODULE
//
// Reads IOTHUB_CONNECTION_STRING; trusts a private CA through
// NODE_EXTRA_CA_CERTS.
'use strict';

const { Registry } = require('azure-iothub');

const isConflict = (err) => err.response?.statusCode === 409;

async function ensure(create, read) {
  try {
    return { created: true, body: (await create()).responseBody };
  } catch (err) {
    if (!isConflict(err)) throw err;
    return { created: false, body: (await read()).responseBody };
  }
}

async function main() {
  const [deviceId, moduleId] = process.argv.slice(2);
  if (!deviceId || !moduleId) {
    console.error('usage: node create-module.js DEVICE MODULE');
    process.exit(2);
  }
  const serviceConnectionString = process.env.IOTHUB_CONNECTION_STRING;
  const registry = Registry.fromConnectionString(serviceConnectionString);
  const device = await ensure(() => registry.create({ deviceId }), () => registry.get(deviceId));
  const module = await ensure(() => registry.addModule({ deviceId, moduleId }),
    () => registry.getModule(deviceId, moduleId));
  const hostName = /HostName=([^;]+)/.exec(serviceConnectionString)[1];
  const moduleKey = module.body.authentication.symmetricKey.primaryKey;
  console.log(JSON.stringify({
    hostName,
    device: { deviceId, result: device.created ? 'created' : 'existing' },
    module: { deviceId, moduleId, result: module.created ? 'created' : 'existing' },
    moduleConnectionString: `HostName=${hostName};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${moduleKey}`,
  }, null, 2));
}

main().catch((err) => {
  console.error(`create-module.js: ${err.constructor.name}: ${err.message}`);
  process.exit(1);
});
