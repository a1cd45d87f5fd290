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
const { once } = require('node:events');
const { createClient, errorDetails, status } = require('..');
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

// The README's code block, evaluated with `require('smschannel-client')` meaning this package and a
// console that keeps what it prints.
function readmeExample(lines) {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const m = readme.match(/<!-- example:start -->\n```js\n([\s\S]*?)```\n<!-- example:end -->/);
  assert.ok(m, 'clients/node/README.md has no example block');
  const load = (name) => (name === 'smschannel-client' ? require('..') : require(name));
  const console = { log: (...args) => lines.push(...args.join(' ').split('\n')) };
  return new Function('require', 'module', 'console', `${m[1]}\nreturn { main, explain };`)(load, {}, console);
}

async function newStore(defaultCountry) {
  const storeId = `readme-${Math.random().toString(16).slice(2, 8)}`;
  const admin = createClient(grpcAddr, ADMIN);
  const created = await admin.sms.CreateStore({ store_id: storeId, store: { display_name: 'README' } });
  admin.close();
  const client = createClient(grpcAddr, created.api_key);
  await client.sms.UpdateSmsChannelConfig({
    sms_channel_config: { name: `stores/${storeId}/smsChannelConfig`, default_country: defaultCountry },
  });
  return { name: `stores/${storeId}`, key: created.api_key, client };
}

test('the README example makes a call and decodes a refusal', async () => {
  const lines = [];
  const { main, explain } = readmeExample(lines);
  const store = await newStore('ES');
  try {
    await main(grpcAddr, store.key, store.name);
    const [ana, refusal, ...details] = lines;
    assert.match(ana, new RegExp(`^${store.name}/contacts/\\S+ \\+34612345678$`));
    assert.match(refusal, /^INVALID_ARGUMENT: .+ \(x-request-id \w+\)$/);
    assert.ok(details.includes('reason INVALID_ARGUMENT (smschannel.example.com)'), lines.join('\n'));
    assert.ok(details.some((l) => l.startsWith('field contact.mobile_phone: ')), lines.join('\n'));
    // The PreconditionFailure branch: a store without an Instasent token cannot send.
    const content = await store.client.sms.CreateSmsContent({
      parent: store.name,
      sms_content: { display_name: 'T', text: 'Hola' },
    });
    const send = store.client.sms.SendSms({
      parent: store.name,
      request_id: 'readme-1',
      sms_content: content.name,
      type: 'SMS_TYPE_TRANSACTIONAL',
      sender: 'Acme',
      alert_phone: '+34612345678',
    });
    await assert.rejects(send, (err) => {
      assert.strictEqual(errorDetails(err).ErrorInfo.domain, 'smschannel.example.com');
      const explained = explain(err).join('\n');
      assert.match(explained, /^FAILED_PRECONDITION: /);
      assert.ok(explained.includes(`precondition NO_PROVIDER_TOKEN on ${store.name}/smsChannelConfig: `), explained);
      return true;
    });
  } finally {
    store.client.close();
  }
});

test('errorDetails is empty for an error without details', () => {
  assert.deepStrictEqual(errorDetails(new Error('no status')), {});
});

test('the article flow', async () => {
  // Twice with the same token (as after the README walkthrough): the second run shares the fake with
  // the first store's SMS to the same phones and must still find, and stop, its own.
  for (let i = 0; i < 2; i += 1) {
    const result = await run(grpcAddr, ADMIN, TOKEN, fakeUrl, () => {});
    assert.strictEqual(result.statuses['+34611000111'], 'MESSAGE_STATUS_SKIPPED');
    assert.deepStrictEqual(result.received, ['+34612345678', '+34699111222']);
    assert.strictEqual(result.ana, 'SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED');
    assert.strictEqual(result.anaUnsubscribes, 1);
  }
});

test('the article example exits 1 when a step fails', async () => {
  // Through its command line, with a token the fake does not know: Instasent refuses it at the first step.
  const example = path.join(__dirname, '..', 'examples', 'article-flow.js');
  const child = spawn(process.execPath, [example, grpcAddr, ADMIN, 'not-the-fakes-token', fakeUrl], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  child.stdout.resume();
  const [code] = await once(child, 'close');
  assert.strictEqual(code, 1, stderr);
  assert.match(stderr, /the article flow failed: Instasent did not accept the token: TOKEN_STATUS_INVALID/);
});
