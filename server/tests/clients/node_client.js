#!/usr/bin/env node
// node-postgres (`pg`) against `audiolake serve`. Connects with PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGDATABASE (default audiolake), runs the checks below over `music` (tests/music) and
// exits 1 naming each failed check. `pg` comes from server/tests/clients/node_modules
// (.ci/clients.sh installs it from package.json there).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('pg');

const FILES = ['a_minor_120.mp3', 'broken.mp3', 'c_major_90.flac', 'd_minor_140.ogg', 'g_major_100.m4a'];
const RATES = [44100, null, 48000, 44100, 22050];
const OID = { int4: 23, int8: 20, text: 25, varchar: 1043, float8: 701, timestamptz: 1184, float4Array: 1021 };

function connect() {
  return new Client({ database: process.env.PGDATABASE || 'audiolake' });
}

async function expectError(client, code, query, params) {
  try {
    await client.query(query, params);
  } catch (e) {
    assert.equal(e.code, code, `SQLSTATE ${e.code} (${e.message}), expected ${code}`);
    return e;
  }
  assert.fail(`${query}: no error, expected SQLSTATE ${code}`);
}

const checks = {
  async simpleQuery(client) {
    // No parameters: node-postgres sends a simple Query message.
    const res = await client.query('SELECT count(*) AS n FROM music');
    assert.equal(res.fields[0].dataTypeID, OID.int8);
    // node-postgres returns int8 as a string, so as not to lose precision.
    assert.equal(res.rows[0].n, '5');
    assert.equal(res.rowCount, 1);
  },

  async parameterized(client) {
    // Parameters: Parse/Bind/Describe/Execute with $1.
    let res = await client.query(
      'SELECT file_name, sample_rate FROM music WHERE sample_rate = $1 ORDER BY file_name', [44100]);
    assert.deepEqual(res.rows, [
      { file_name: 'a_minor_120.mp3', sample_rate: 44100 },
      { file_name: 'd_minor_140.ogg', sample_rate: 44100 },
    ]);
    res = await client.query({ text: 'SELECT file_name FROM music WHERE file_name = $1', values: ['c_major_90.flac'], rowMode: 'array' });
    assert.deepEqual(res.rows, [['c_major_90.flac']]);
    // A named prepared statement, run twice with different values.
    for (const [rate, want] of [[48000, 'c_major_90.flac'], [22050, 'g_major_100.m4a']]) {
      res = await client.query({ name: 'by-rate', text: 'SELECT file_name FROM music WHERE sample_rate = $1', values: [rate] });
      assert.deepEqual(res.rows.map((r) => r.file_name), [want]);
    }
  },

  async types(client) {
    const res = await client.query(
      'SELECT file_name, size_bytes, last_modified, sample_rate, channels, duration_s, error FROM music ORDER BY file_name');
    const types = Object.fromEntries(res.fields.map((f) => [f.name, f.dataTypeID]));
    assert.ok([OID.text, OID.varchar].includes(types.file_name), JSON.stringify(types));
    assert.equal(types.size_bytes, OID.int8);
    assert.equal(types.last_modified, OID.timestamptz);
    assert.equal(types.sample_rate, OID.int4);
    assert.equal(types.duration_s, OID.float8);
    assert.deepEqual(res.rows.map((r) => r.file_name), FILES);
    assert.deepEqual(res.rows.map((r) => r.sample_rate), RATES);
    const music = process.env.AUDIOLAKE_MUSIC;
    for (const r of res.rows) {
      assert.ok(r.last_modified instanceof Date && !isNaN(r.last_modified), String(r.last_modified));
      assert.match(r.size_bytes, /^[0-9]+$/);
      if (music) {
        const st = fs.statSync(path.join(music, r.file_name));
        assert.equal(Number(r.size_bytes), st.size, r.file_name);
        assert.ok(Math.abs(r.last_modified.getTime() - st.mtimeMs) < 1000, `${r.file_name}: ${r.last_modified.toISOString()} vs ${new Date(st.mtimeMs).toISOString()}`);
      }
      if (r.file_name === 'broken.mp3') {
        assert.equal(r.duration_s, null);
        assert.equal(typeof r.error, 'string');
      } else {
        assert.equal(typeof r.duration_s, 'number');
        assert.ok(Math.abs(r.duration_s - 16) < 0.2, `${r.file_name}: ${r.duration_s}`);
        assert.ok([1, 2].includes(r.channels), String(r.channels));
        assert.equal(r.error, null);
      }
    }
  },

  async float4Array(client) {
    const res = await client.query('SELECT file_name, chroma FROM music WHERE file_name = $1', ['c_major_90.flac']);
    assert.equal(res.fields[1].dataTypeID, OID.float4Array);
    const chroma = res.rows[0].chroma;
    assert.ok(Array.isArray(chroma), `chroma is ${typeof chroma}: ${chroma}`);
    assert.equal(chroma.length, 12);
    for (const v of chroma) assert.ok(typeof v === 'number' && Number.isFinite(v) && v >= 0, String(v));
  },

  async errorsAndRecovery(client) {
    await expectError(client, '42P01', 'SELECT * FROM no_such_table');
    assert.equal((await client.query('SELECT count(*) AS n FROM music')).rows[0].n, '5');
    await expectError(client, '42601', 'SELEC 1');
    // An error in the extended protocol, then a parameterized query on the same connection.
    await expectError(client, '42P01', 'SELECT * FROM no_such_table WHERE x = $1', [1]);
    const res = await client.query('SELECT file_name FROM music WHERE channels = $1 ORDER BY file_name', [2]);
    assert.deepEqual(res.rows.map((r) => r.file_name), ['a_minor_120.mp3', 'g_major_100.m4a']);
    // Inside a transaction: the error aborts it until ROLLBACK.
    await client.query('BEGIN');
    await expectError(client, '42P01', 'SELECT * FROM no_such_table');
    await client.query('ROLLBACK');
    assert.equal((await client.query('SELECT count(*) AS n FROM music')).rows[0].n, '5');
  },

  async int4Literal(client) {
    // PostgreSQL types a small integer literal as int4, which node-postgres reads as a number;
    // int8 would come back as the string '1'.
    const res = await client.query('SELECT 1 AS one, 2 + 3 AS five');
    assert.equal(res.fields[0].dataTypeID, OID.int4, `SELECT 1 is of type OID ${res.fields[0].dataTypeID}, not int4 (23)`);
    assert.deepEqual(res.rows[0], { one: 1, five: 5 });
  },

  async untypedLimitParameters(client) {
    // node-postgres sends every parameter as text of no type; PostgreSQL types LIMIT's and
    // OFFSET's as bigint.
    const res = await client.query('SELECT file_name FROM music ORDER BY file_name LIMIT $1 OFFSET $2', [2, 1]);
    assert.deepEqual(res.rows.map((r) => r.file_name), ['broken.mp3', 'c_major_90.flac']);
  },
};

(async () => {
  const failures = [];
  const client = connect();
  try {
    await client.connect();
  } catch (e) {
    console.log(`FAIL connect: ${e.stack}`);
    process.exit(1);
  }
  for (const [name, fn] of Object.entries(checks)) {
    try {
      await fn(client);
      console.log(`ok   ${name}`);
    } catch (e) {
      failures.push(name);
      console.log(`FAIL ${name}: ${e.stack}`);
    }
  }
  await client.end();
  if (failures.length) {
    console.log(`node-postgres: ${failures.length} check(s) failed: ${failures.join(', ')}`);
    process.exit(1);
  }
  console.log('node-postgres: all checks passed');
})();
