'use strict';
// The help-centre article with the Node client:
//   node examples/article-flow.js <target> <admin key> <instasent token> [fake instasent base URL]
// Channel config → callback URL → contacts with national numbers → an SMS content with an
// unsubscribe variable → a newsletter workflow → the message log (→ what Instasent received, an opt-out).
const { createClient } = require('..');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check, what, seconds = 30) {
  for (let i = 0; i < seconds * 10; i += 1) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function http(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return res.json();
}

async function run(target, adminKey, token, fake = '', say = console.log) {
  const storeId = `node-${Math.random().toString(16).slice(2, 8)}`;
  const admin = createClient(target, adminKey);
  const created = await admin.sms.CreateStore({ store_id: storeId, store: { display_name: 'Node shop' } });
  admin.close();
  say(`1. store ${created.store.name} created`);
  const client = createClient(target, created.api_key);
  try {
    const config = await client.sms.UpdateSmsChannelConfig({
      sms_channel_config: {
        name: `stores/${storeId}/smsChannelConfig`,
        api_token: token,
        default_country: 'ES',
        default_sender: 'NodeShop',
      },
    });
    say(`   token ${config.api_token_hint} is ${config.token_status}; callback URL ${config.callback_url}`);
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
    const result = { statuses };
    if (fake) {
      const mine = (await http('GET', `${fake}/_fake/messages`)).messages.filter((r) => r.token === token);
      say('5. what Instasent received:');
      for (const r of mine) say(`   to ${r.to}: ${JSON.stringify(r.text)}`);
      const ana = mine.find((r) => r.to === '+34612345678');
      await http('POST', `${fake}/_fake/stop`, { id: ana.id });
      const found = await client.contacts.ListContacts({ parent: `stores/${storeId}`, filter: 'email = ana@example.com' });
      say(`6. Ana opted out: she is now ${found.contacts[0].sms_subscription_status}`);
      Object.assign(result, { received: mine.map((r) => r.to).sort(), ana: found.contacts[0].sms_subscription_status });
    }
    return result;
  } finally {
    client.close();
  }
}

module.exports = { run };

if (require.main === module) {
  const [target, adminKey, token, fake] = process.argv.slice(2);
  run(target, adminKey, token, fake).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
