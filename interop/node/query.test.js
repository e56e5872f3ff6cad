// Microsoft's Node.js service SDK (azure-iothub) queries the emulator,
// unchanged: Registry.createQuery paged with nextAsTwin over devices and
// devices.modules, raw next() for aggregates, and Registry.list. The Go
// test in ../ starts the emulator and sets IOTHUB_CONNECTION_STRING and
// NODE_EXTRA_CA_CERTS.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');

const run = `q${Date.now().toString(36)}`;
const devices = [0, 1, 2, 3, 4].map((i) => `${run}-dev${i}`);
const modulesPerDevice = 3;

// pages runs a query to the end with nextAsTwin and returns every twin and
// how many pages it took.
async function pages(query) {
  const twins = [];
  let n = 0;
  while (query.hasMoreResults) {
    const { result } = await query.nextAsTwin();
    twins.push(...result);
    n++;
    assert.ok(n < 100, 'query never ended');
  }
  return { twins, pages: n };
}

test('the Node.js service SDK queries twins', async (t) => {
  const registry = Registry.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING);
  for (const [i, deviceId] of devices.entries()) {
    await registry.create({ deviceId });
    await registry.updateTwin(deviceId, { tags: { run, rank: i } }, '*');
    for (let m = 0; m < modulesPerDevice; m++) {
      const moduleId = `mod${m}`;
      await registry.addModule({ deviceId, moduleId });
      await registry.updateModuleTwin(deviceId, moduleId, { tags: { run, kind: m === 0 ? 'first' : 'other' } }, '*');
    }
  }

  await t.test('Registry.list lists the devices', async () => {
    const { responseBody } = await registry.list();
    const ids = responseBody.map((d) => d.deviceId);
    for (const id of devices) assert.ok(ids.includes(id), `${id} is listed`);
  });

  await t.test('createQuery pages device twins with nextAsTwin', async () => {
    const { twins, pages: n } = await pages(registry.createQuery(`SELECT * FROM devices WHERE tags.run = '${run}'`, 2));
    assert.deepEqual(twins.map((tw) => tw.deviceId).sort(), [...devices].sort());
    assert.ok(n >= 3, `5 devices in pages of 2 took ${n} pages`);
    for (const tw of twins) {
      assert.equal(tw.tags.run, run);
      assert.equal(typeof tw.properties.desired.$version, 'number');
    }
    // A Twin from a query is a working Twin: it reads itself back.
    const { result: again } = await twins[0].get();
    assert.equal(again.deviceId, twins[0].deviceId);
    assert.equal(again.tags.run, run);
  });

  await t.test('createQuery pages module twins with nextAsTwin', async () => {
    const { twins } = await pages(registry.createQuery(`SELECT * FROM devices.modules WHERE tags.run = '${run}'`, 4));
    const keys = twins.map((tw) => `${tw.deviceId}/${tw.moduleId}`);
    assert.equal(keys.length, devices.length * modulesPerDevice);
    assert.equal(new Set(keys).size, keys.length, 'no module twice');
    const first = await pages(registry.createQuery(`SELECT * FROM devices.modules WHERE tags.run = '${run}' AND tags.kind = 'first'`));
    assert.deepEqual(first.twins.map((tw) => tw.moduleId), devices.map(() => 'mod0'));
  });

  await t.test('aggregates and projections come back through next()', async () => {
    const { result } = await registry.createQuery(
      `SELECT tags.kind AS kind, COUNT() AS n FROM devices.modules WHERE tags.run = '${run}' GROUP BY tags.kind`).next();
    assert.deepEqual(result, [{ kind: 'first', n: 5 }, { kind: 'other', n: 10 }]);
    const { result: rows } = await registry.createQuery(
      `SELECT deviceId, tags.rank FROM devices WHERE tags.run = '${run}' AND tags.rank >= 3`).next();
    assert.deepEqual(rows, [{ deviceId: devices[3], rank: 3 }, { deviceId: devices[4], rank: 4 }]);
  });

  await t.test('a malformed query is refused with the position', async () => {
    await assert.rejects(registry.createQuery('SELECT * FROM devices ORDER BY deviceId').next(),
      (err) => err.constructor.name === 'ArgumentError' && /Line 1:23/.test(err.responseBody));
  });
});
