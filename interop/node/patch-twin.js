// Patches a module twin's desired properties with Microsoft's Node.js service
// SDK: node patch-twin.js DEVICE MODULE '{"key":value}'. It reads the twin
// first and sends its etag, as the tutorial's service program does.
'use strict';

const { Registry } = require('azure-iothub');

async function main() {
  const [deviceId, moduleId, json] = process.argv.slice(2);
  if (!deviceId || !moduleId || !json) {
    console.error('usage: node patch-twin.js DEVICE MODULE JSON');
    process.exit(2);
  }
  const registry = Registry.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING);
  const twin = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
  const updated = (await registry.updateModuleTwin(deviceId, moduleId,
    { properties: { desired: JSON.parse(json) } }, twin.etag)).responseBody;
  console.log(JSON.stringify({ version: updated.properties.desired.$version }));
}

main().catch((err) => {
  console.error(`patch-twin: ${err.constructor.name}: ${err.message}`);
  process.exit(1);
});
