'use strict';
// Node client of the SMS channel service: the three smschannel.v1 services loaded from the protos with
// @grpc/proto-loader, every call carrying the API key and a deadline, UNAVAILABLE retried by gRPC's
// own retry policy (and nothing else, so a call that reached the server is never repeated).
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = process.env.SMSCHANNEL_PROTOS || path.join(__dirname, '..', '..', 'protos');
const FILES = ['sms_channel_service.proto', 'contacts_service.proto', 'workflow_service.proto'].map(
  (f) => path.join('smschannel', 'v1', f),
);
const SERVICES = ['SmsChannelService', 'ContactsService', 'WorkflowService'];

function load() {
  const definition = protoLoader.loadSync(FILES, {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the protos: store_id, mobile_phone, ...
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).smschannel.v1;
}

function serviceConfig(maxAttempts = 4) {
  return JSON.stringify({
    methodConfig: [
      {
        name: SERVICES.map((s) => ({ service: `smschannel.v1.${s}` })),
        retryPolicy: {
          maxAttempts,
          initialBackoff: '0.1s',
          maxBackoff: '2s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  });
}

// Promise versions of every method of a stub; client-streaming methods take an array of requests.
function promisify(stub, apiKey, timeoutMs) {
  const out = {};
  for (const [name, method] of Object.entries(Object.getPrototypeOf(stub))) {
    if (typeof method !== 'function' || !method.path) continue;
    out[name] = (request, options = {}) => {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${apiKey}`);
      const callOptions = { deadline: Date.now() + (options.timeoutMs || timeoutMs) };
      return new Promise((resolve, reject) => {
        const done = (err, response) => (err ? reject(err) : resolve(response));
        if (method.requestStream) {
          const call = stub[name](metadata, callOptions, done);
          for (const message of request) call.write(message);
          call.end();
        } else {
          stub[name](request, metadata, callOptions, done);
        }
      });
    };
  }
  return out;
}

// createClient('127.0.0.1:50051', key) → { sms, contacts, workflows, close() }
function createClient(target, apiKey, { timeoutMs = 10000, credentials } = {}) {
  const v1 = load();
  const creds = credentials || grpc.credentials.createInsecure();
  const options = { 'grpc.service_config': serviceConfig(), 'grpc.enable_retries': 1 };
  const sms = new v1.SmsChannelService(target, creds, options);
  const contacts = new v1.ContactsService(target, creds, options);
  const workflows = new v1.WorkflowService(target, creds, options);
  return {
    sms: promisify(sms, apiKey, timeoutMs),
    contacts: promisify(contacts, apiKey, timeoutMs),
    workflows: promisify(workflows, apiKey, timeoutMs),
    close() {
      for (const stub of [sms, contacts, workflows]) stub.close();
    },
  };
}

module.exports = { createClient, load, serviceConfig, status: grpc.status };
