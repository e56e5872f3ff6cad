// Microsoft's Node.js SDKs against iothub-emulator, unchanged: the service
// SDK (azure-iothub) manages identities and twins over HTTPS on port 443,
// the device SDK (azure-iot-device + azure-iot-device-mqtt) connects a
// module over MQTT/TLS on port 8883. The Go test in ../ starts the emulator
// and sets IOTHUB_CONNECTION_STRING and NODE_EXTRA_CA_CERTS.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { ModuleClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const serviceConnectionString = process.env.IOTHUB_CONNECTION_STRING;
const hostName = /HostName=([^;]+)/.exec(serviceConnectionString || '')?.[1];
const run = Date.now().toString(36);
const deviceId = `node-device-${run}`;
const moduleId = `node-module-${run}`;

function waitFor(emitter, event, predicate, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    const listener = (value) => {
      if (predicate(value)) {
        clearTimeout(timer);
        emitter.removeListener(event, listener);
        resolve(value);
      }
    };
    emitter.on(event, listener);
  });
}

test('Node.js SDKs work against the emulator', async (t) => {
  assert.ok(serviceConnectionString, 'IOTHUB_CONNECTION_STRING must be set');
  const registry = Registry.fromConnectionString(serviceConnectionString);

  let moduleKey;
  await t.test('registry creates a device and a module with generated keys', async () => {
    const device = (await registry.create({ deviceId })).responseBody;
    assert.equal(device.deviceId, deviceId);
    assert.equal(device.authentication.type, 'sas');
    assert.equal(Buffer.from(device.authentication.symmetricKey.primaryKey, 'base64').length, 32);

    await registry.addModule({ deviceId, moduleId });
    const module = (await registry.getModule(deviceId, moduleId)).responseBody;
    assert.equal(module.moduleId, moduleId);
    moduleKey = module.authentication.symmetricKey.primaryKey;
    assert.ok(moduleKey, 'module has a generated primary key');
  });

  await t.test('creating an existing device fails with DeviceAlreadyExistsError', async () => {
    await assert.rejects(registry.create({ deviceId }), (err) => err.constructor.name === 'DeviceAlreadyExistsError');
  });

  const moduleConnectionString = () =>
    `HostName=${hostName};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${moduleKey}`;

  await t.test('a module with a wrong key is refused', async () => {
    const wrong = Buffer.alloc(32, 7).toString('base64');
    const client = ModuleClient.fromConnectionString(
      `HostName=${hostName};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${wrong}`, Mqtt);
    await assert.rejects(client.open(), (err) => /Unauthorized|not authorized/i.test(`${err.constructor.name} ${err.message}`));
    await client.close().catch(() => {});
  });

  await t.test('module client gets its twin, receives a desired patch and reports back', async () => {
    const client = ModuleClient.fromConnectionString(moduleConnectionString(), Mqtt);
    await client.open();
    try {
      const twin = await client.getTwin();
      assert.equal(typeof twin.properties.desired.$version, 'number');
      const before = twin.properties.desired.$version;

      const patches = [];
      twin.on('properties.desired', (delta) => patches.push(delta));
      const arrived = waitFor(twin, 'properties.desired', (d) => d.telemetryInterval === 122, 10000);

      const serviceTwin = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
      await registry.updateModuleTwin(deviceId, moduleId,
        { properties: { desired: { telemetryInterval: 122 } } }, serviceTwin.etag);
      const delta = await arrived;
      assert.equal(delta.$version, before + 1);

      await new Promise((resolve, reject) =>
        twin.properties.reported.update({ telemetryInterval: { value: 122, ac: 200, av: delta.$version } },
          (err) => (err ? reject(err) : resolve())));
      const after = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
      assert.deepEqual(after.properties.reported.telemetryInterval, { value: 122, ac: 200, av: delta.$version });
    } finally {
      await client.close();
    }
  });

  await t.test('a stale etag is refused with 412', async () => {
    const first = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
    await registry.updateModuleTwin(deviceId, moduleId, { properties: { desired: { step: 1 } } }, first.etag);
    await assert.rejects(
      registry.updateModuleTwin(deviceId, moduleId, { properties: { desired: { step: 2 } } }, first.etag),
      (err) => err.response?.statusCode === 412 || /InvalidEtag|Precondition/i.test(`${err.constructor.name} ${err.message}`));
  });

  await t.test('deleting the device removes its module', async () => {
    await registry.delete(deviceId);
    await assert.rejects(registry.getModule(deviceId, moduleId), (err) => err.response?.statusCode === 404);
  });
});
