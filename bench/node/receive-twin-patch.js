// The Node.js peer of `receive-twin-patch --output json`: connect a module
// over MQTT, read its twin, and print one JSON line per event:
//   {"type":"twin","version":N,"desired":{…}}   the desired properties read at start
//   {"type":"patch","version":N,"desired":{…}}  each desired-properties patch
// "waiting for desired property patches" goes to stderr once the
// subscription to patches is acknowledged. Ends on SIGINT or SIGTERM.
//
// Reads IOTHUB_MODULE_CONNECTION_STRING; trusts a private CA through
// NODE_EXTRA_CA_CERTS.
'use strict';

const { ModuleClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function print(type, desired) {
  process.stdout.write(JSON.stringify({ type, version: desired.$version, desired }) + '\n');
}

async function main() {
  const client = ModuleClient.fromConnectionString(process.env.IOTHUB_MODULE_CONNECTION_STRING, Mqtt);
  client.on('error', (err) => console.error(`receive-twin-patch.js: ${err.message}`));
  await client.open();
  const twin = await client.getTwin();
  print('twin', twin.properties.desired);
  // The SDK also replays the current desired properties to a new listener:
  // that call passes the twin's own object, a patch never is.
  twin.on('properties.desired', (delta) => {
    if (delta !== twin.properties.desired) print('patch', delta);
  });
  // Registering the listener subscribes to patches; this call waits for
  // the same subscription to be acknowledged.
  await new Promise((resolve, reject) =>
    twin.enableTwinDesiredPropertiesUpdates((err) => (err ? reject(err) : resolve())));
  console.error('waiting for desired property patches');

  const stop = () => client.close().finally(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err) => {
  console.error(`receive-twin-patch.js: ${err.constructor.name}: ${err.message}`);
  process.exit(1);
});
