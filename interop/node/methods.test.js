// Direct methods through iothub-emulator with Microsoft's Node.js SDKs,
// unchanged: azure-iothub's Client.invokeDeviceMethod calls a module and a
// device; azure-iot-device's ModuleClient.onMethod and Client.onDeviceMethod
// answer over MQTT/TLS. The Go test in ../ starts the emulator and sets
// IOTHUB_CONNECTION_STRING and NODE_EXTRA_CA_CERTS.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client: DeviceClient, ModuleClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const serviceConnectionString = process.env.IOTHUB_CONNECTION_STRING;
const hostName = /HostName=([^;]+)/.exec(serviceConnectionString || '')?.[1];
const run = Date.now().toString(36);
const deviceId = `node-methods-${run}`;
const moduleId = `node-methods-module-${run}`;
const idleModuleId = `node-methods-idle-${run}`;

// The device SDKs subscribe to methods in the background after open():
// a connect timeout lets the first call wait for that subscription.
const connectTimeoutInSeconds = 30;

test('direct methods with the Node.js SDKs', async (t) => {
  assert.ok(serviceConnectionString, 'IOTHUB_CONNECTION_STRING must be set');
  const registry = Registry.fromConnectionString(serviceConnectionString);
  const device = (await registry.create({ deviceId })).responseBody;
  await registry.addModule({ deviceId, moduleId });
  await registry.addModule({ deviceId, moduleId: idleModuleId });
  const module = (await registry.getModule(deviceId, moduleId)).responseBody;

  const service = ServiceClient.fromConnectionString(serviceConnectionString);
  const moduleClient = ModuleClient.fromConnectionString(
    `HostName=${hostName};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${module.authentication.symmetricKey.primaryKey}`, Mqtt);
  const deviceClient = DeviceClient.fromConnectionString(
    `HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${device.authentication.symmetricKey.primaryKey}`, Mqtt);
  await moduleClient.open();
  await deviceClient.open();
  t.after(async () => {
    await moduleClient.close();
    await deviceClient.close();
    await registry.delete(deviceId);
  });

  moduleClient.onMethod('echo', (request, response) => {
    response.send(200, { echo: request.payload, from: 'module' }, (err) => assert.ifError(err));
  });
  deviceClient.onDeviceMethod('reboot', (request, response) => {
    response.send(202, { rebootingIn: request.payload.delay, from: 'device' }, (err) => assert.ifError(err));
  });

  await t.test('invokeDeviceMethod on a module, answered by ModuleClient.onMethod', async () => {
    const { result } = await service.invokeDeviceMethod(deviceId, moduleId,
      { methodName: 'echo', payload: { n: 1, text: 'hi' }, responseTimeoutInSeconds: 30, connectTimeoutInSeconds });
    assert.deepEqual(result, { status: 200, payload: { echo: { n: 1, text: 'hi' }, from: 'module' } });
  });

  await t.test('invokeDeviceMethod on a device, answered by Client.onDeviceMethod', async () => {
    const { result } = await service.invokeDeviceMethod(deviceId,
      { methodName: 'reboot', payload: { delay: 3 }, connectTimeoutInSeconds });
    assert.deepEqual(result, { status: 202, payload: { rebootingIn: 3, from: 'device' } });
  });

  await t.test('a method without a handler times out with GatewayTimeoutError', async () => {
    await assert.rejects(
      service.invokeDeviceMethod(deviceId, moduleId, { methodName: 'nothing', responseTimeoutInSeconds: 5 }),
      (err) => err.constructor.name === 'GatewayTimeoutError' && /504101/.test(err.responseBody));
  });

  await t.test('an offline module fails with 404 DeviceNotOnline', async () => {
    await assert.rejects(
      service.invokeDeviceMethod(deviceId, idleModuleId, { methodName: 'echo' }),
      (err) => err.response?.statusCode === 404 && /404103/.test(err.responseBody));
  });
});
