// The Node.js peer of update-module-twin: read a module twin, merge desired
// properties into it with the etag just read (If-Match), and print the twin
// before and after as JSON.
//
//   node update-module-twin.js DEVICE MODULE '{"key": value}'
//
// Reads IOTHUB_CONNECTION_STRING; trusts a private CA through
// NODE_EXTRA_CA_CERTS.
'use strict';

const { Registry } = require('azure-iothub');

async function main() {
  const [deviceId, moduleId, desired] = process.argv.slice(2);
  if (!deviceId || !moduleId || !desired) {
    console.error('usage: node update-module-twin.js DEVICE MODULE JSON');
    process.exit(2);
  }
  const registry = Registry.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING);
  const before = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
  const after = (await registry.updateModuleTwin(deviceId, moduleId,
    { properties: { desired: JSON.parse(desired) } }, before.etag)).responseBody;
  console.log(JSON.stringify({ before, after }, null, 2));
}

main().catch((err) => {
  console.error(`update-module-twin.js: ${err.constructor.name}: ${err.message}`);
  process.exit(1);
});
