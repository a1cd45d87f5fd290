'use strict';
// The help-centre article with the Node client:
//   node examples/article-flow.js <target> <admin key> <instasent token> [fake instasent base URL]
// Channel config → callback URL → contacts with national numbers → an SMS content with an
// unsubscribe variable → a newsletter workflow → the message log (→ what Instasent received, an opt-out).
// Every step's outcome is checked (the token valid, the consenting contacts' messages SENT, the opt-out
// applied, Ana UNSUBSCRIBED); the first that is not as the article says sets exit status 1. The fake is
// shared by everyone using the same token (the README walkthrough, an earlier run), so the flow only
// looks at its own SMS there: those whose clientId is one of this store's message ids.
const { createClient } = require('..');

const ANA = '+34612345678';
const BRUNO = '+34699111222';
const CARLA = '+34611000111';
// Accepted by Instasent; DELIVERED once the delivery report has come back.
const ACCEPTED = ['MESSAGE_STATUS_SENT', 'MESSAGE_STATUS_DELIVERED'];

// A step that did not have the outcome the article promises.
class FlowFailed extends Error {}

function expect(ok, what) {
  if (!ok) throw new FlowFailed(what);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check, what, seconds = 30) {
  for (let i = 0; i < seconds * 10; i += 1) {
    if (await check()) return;
    await sleep(100);
  }
  throw new FlowFailed(`timed out waiting for ${what}`);
}

async function http(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10000),
  });
  if (!res.ok) throw new FlowFailed(`${method} ${url} answered ${res.status}: ${await res.text()}`);
  return res.json();
}

async function run(target, adminKey, token, fake = '', say = console.log) {
  const storeId = `node-${Math.random().toString(16).slice(2, 8)}`;
  const admin = createClient(target, adminKey);
  let created;
  try {
    created = await admin.sms.CreateStore({ store_id: storeId, store: { display_name: 'Node shop' } });
  } finally {
    admin.close();
  }
  say(`1. store ${created.store.name} created`);
  const client = createClient(target, created.api_key);
  try {
    const config = await client.sms.UpdateSmsChannelConfig({
      sms_channel_config: {
        name: `stores/${storeId}/smsChannelConfig`,
        api_token: token,
        default_country: 'ES',
        default_sender: 'NodeShop',
        // A demo sends at any hour; a real store keeps its quiet hours (21:00–09:00 by default).
        quiet_hours: {},
      },
    });
    say(`   token ${config.api_token_hint} is ${config.token_status}; callback URL ${config.callback_url}`);
    expect(
      config.token_status === 'TOKEN_STATUS_VALID',
      `Instasent did not accept the token: ${config.token_status} ${config.token_status_message}`.trim(),
    );
    if (fake) await http('POST', `${fake}/_fake/tokens`, { token, callback_url: config.callback_url });

    const imported = await client.contacts.ImportContacts([
      {
        parent: `stores/${storeId}`,
        contacts: [
          { email: 'ana@example.com', first_name: 'Ana', mobile_phone: '612 345 678', sms_subscription_status: 'SMS_SUBSCRIPTION_STATUS_SUBSCRIBED' },
          { email: 'bruno@example.com', first_name: 'Bruno', mobile_phone: '0034 699 111 222', sms_subscription_status: 'SMS_SUBSCRIPTION_STATUS_SUBSCRIBED' },
          { email: 'carla@example.com', first_name: 'Carla', mobile_phone: '611 000 111' },
        ],
      },
    ]);
    say(`2. imported ${imported.created_count} contacts`);
    expect(imported.created_count === 3, `${imported.created_count} of 3 contacts imported`);

    const content = await client.sms.CreateSmsContent({
      parent: `stores/${storeId}`,
      sms_content: { display_name: 'Spring sale', text: 'Hola {{name}}! -20% hoy. Baja: {{stop}}' },
    });
    say(`3. SMS content ${content.name} with variables ${content.variables.join(', ')}`);

    const workflow = await client.workflows.CreateWorkflow({
      parent: `stores/${storeId}`,
      workflow: {
        display_name: 'Spring newsletter',
        trigger: { broadcast: {} },
        start_node: 'send',
        nodes: [
          {
            id: 'send',
            send_sms: {
              sms_content: content.name,
              recipient_mode: 'RECIPIENT_MODE_CONTACT',
              type: 'SMS_TYPE_NEWSLETTER',
              variables: {
                name: { contact_field: 'first_name', fallback: 'cliente' },
                stop: { literal: '{{unsubscribe}}' },
              },
            },
          },
        ],
      },
    });
    await client.workflows.ActivateWorkflow({ name: workflow.name });
    await waitFor(async () => {
      const runs = await client.workflows.ListWorkflowRuns({ parent: workflow.name });
      return runs.workflow_runs.length === 3 && runs.workflow_runs.every((r) => r.state === 'WORKFLOW_RUN_STATE_COMPLETED');
    }, 'the newsletter runs');
    await waitFor(async () => {
      const log = await client.sms.ListMessages({ parent: `stores/${storeId}` });
      return log.messages.every((m) => m.status !== 'MESSAGE_STATUS_QUEUED');
    }, 'the outbox');
    const log = await client.sms.ListMessages({ parent: `stores/${storeId}` });
    say('4. the message log:');
    const statuses = {};
    for (const m of log.messages) {
      statuses[m.recipient] = m.status;
      say(`   ${m.recipient} ${m.status} ${JSON.stringify(m.text)} ${m.status_reason}`);
    }
    expect(log.messages.length === 3, `${log.messages.length} messages for 3 contacts`);
    for (const phone of [ANA, BRUNO]) {
      expect(ACCEPTED.includes(statuses[phone]), `the message to ${phone} is ${statuses[phone]}, not SENT`);
    }
    expect(statuses[CARLA] === 'MESSAGE_STATUS_SKIPPED', `Carla's message is ${statuses[CARLA]}`);
    const result = { statuses };
    if (fake) {
      // A message's id is its clientId at Instasent: this store's SMS among everyone's.
      const clientIds = new Map(log.messages.map((m) => [m.name.split('/').pop(), m.recipient]));
      const received = (await http('GET', `${fake}/_fake/messages`)).messages;
      const mine = received.filter((r) => r.token === token && clientIds.has(r.client_id));
      say('5. what Instasent received:');
      for (const r of mine) say(`   to ${r.to}: ${JSON.stringify(r.text)}`);
      const phones = mine.map((r) => r.to).sort();
      expect(phones.join() === [ANA, BRUNO].join(), `Instasent received ${JSON.stringify(phones)}`);
      const [anaClientId] = [...clientIds].find(([, phone]) => phone === ANA);
      const answer = await http('POST', `${fake}/_fake/stop`, { token, clientId: anaClientId });
      expect(answer.delivered === true, 'the sidecar did not acknowledge the `stop` callback');
      const found = await client.contacts.ListContacts({ parent: `stores/${storeId}`, filter: 'email = ana@example.com' });
      const ana = found.contacts[0].sms_subscription_status;
      const acts = await client.contacts.ListActivities({ parent: found.contacts[0].name, filter: 'type = SMS_UNSUBSCRIBE' });
      say(`6. Ana opted out: she is now ${ana}, with ${acts.activities.length} 'SMS unsubscribe' activity`);
      expect(ana === 'SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED', `Ana is ${ana} after her opt-out`);
      expect(acts.activities.length === 1, `Ana has ${acts.activities.length} 'SMS unsubscribe' activities`);
      Object.assign(result, { received: phones, ana, anaUnsubscribes: acts.activities.length });
    }
    return result;
  } finally {
    client.close();
  }
}

module.exports = { run, FlowFailed };

if (require.main === module) {
  const [target, adminKey, token, fake] = process.argv.slice(2);
  // exitCode rather than exit(), which can cut a piped stderr short; with the channels closed Node ends.
  run(target, adminKey, token, fake).catch((err) => {
    console.error(err instanceof FlowFailed ? `the article flow failed: ${err.message}` : err);
    process.exitCode = 1;
  });
}
