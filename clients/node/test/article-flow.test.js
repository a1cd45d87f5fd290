'use strict';
// npm test: starts the fake Instasent, the server and the sidecar (from the repository's virtualenv),
// then plays the article with the Node client and checks what happened.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const { createClient, status } = require('..');
const { run } = require('../examples/article-flow');

const ROOT = path.join(__dirname, '..', '..', '..');
const PYTHON = process.env.SMSCHANNEL_PYTHON || path.join(ROOT, '.venv', 'bin', 'python');
const ADMIN = 'node-test-admin';
const TOKEN = 'node-test-token';
const children = [];
let grpcAddr;
let fakeUrl;

function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(args, env) {
  const child = spawn(PYTHON, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(child);
  return child;
}

async function until(check, what) {
  for (let i = 0; i < 300; i += 1) {
    try {
      if (await check()) return;
    } catch (e) {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

before(async () => {
  const [g, h, f] = [await freePort(), await freePort(), await freePort()];
  grpcAddr = `127.0.0.1:${g}`;
  fakeUrl = `http://127.0.0.1:${f}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smschannel-node-'));
  const env = {
    SMSCHANNEL_GRPC_ADDR: grpcAddr,
    SMSCHANNEL_HTTP_ADDR: `127.0.0.1:${h}`,
    SMSCHANNEL_DB: path.join(dir, 'node.db'),
    SMSCHANNEL_ADMIN_KEY: ADMIN,
    SMSCHANNEL_SECRET_KEY: 'node-test-secret',
    INSTASENT_BASE_URL: fakeUrl,
  };
  start(['-m', 'smschannel.instasent.fake', '--port', String(f), '--token', TOKEN], env);
  start(['-m', 'smschannel', 'run'], env);
  await until(async () => (await fetch(`${fakeUrl}/_fake/messages`)).ok, 'the fake Instasent');
  await until(async () => (await fetch(`http://127.0.0.1:${h}/healthz`)).ok, 'the sidecar');
  await until(async () => {
    const c = createClient(grpcAddr, ADMIN, { timeoutMs: 1000 });
    try {
      await c.sms.GetStore({ name: 'stores/none' });
    } catch (err) {
      return err.code === status.NOT_FOUND;
    } finally {
      c.close();
    }
    return false;
  }, 'the server');
});

after(() => {
  for (const child of children) child.kill('SIGTERM');
});

test('a bad key is UNAUTHENTICATED', async () => {
  const c = createClient(grpcAddr, 'nope');
  await assert.rejects(c.sms.GetStore({ name: 'stores/x' }), (err) => err.code === status.UNAUTHENTICATED);
  c.close();
});

test('the article flow', async () => {
  const result = await run(grpcAddr, ADMIN, TOKEN, fakeUrl, () => {});
  assert.strictEqual(result.statuses['+34611000111'], 'MESSAGE_STATUS_SKIPPED');
  assert.deepStrictEqual(result.received, ['+34612345678', '+34699111222']);
  assert.strictEqual(result.ana, 'SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED');
});
