'use strict';
// Node client of the SMS channel service: the three smschannel.v1 services loaded from the protos with
// @grpc/proto-loader, every call carrying the API key and a deadline, UNAVAILABLE retried by gRPC's
// own retry policy (and nothing else, so a call that reached the server is never repeated).
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

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

// The google.rpc messages this service puts in its errors (AIP-193), with their upstream field numbers
// (google/rpc/status.proto, error_details.proto). Declared here because npm has those protos only inside
// large packages (google-proto-files); protobufjs is the parser @grpc/proto-loader already brings. Any is
// spelt out so that nothing needs resolving: each detail is decoded by its type URL below.
const RPC = protobuf.parse(
  `syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message BadRequest {
    message FieldViolation { string field = 1; string description = 2; }
    repeated FieldViolation field_violations = 1;
  }
  message PreconditionFailure {
    message Violation { string type = 1; string subject = 2; string description = 3; }
    repeated Violation violations = 1;
  }
  message ResourceInfo { string resource_type = 1; string resource_name = 2; string owner = 3; string description = 4; }`,
  { keepCase: true },
).root;
const DETAILS = ['ErrorInfo', 'BadRequest', 'PreconditionFailure', 'ResourceInfo'];

// errorDetails(err) → { ErrorInfo, BadRequest, PreconditionFailure, ResourceInfo }: the google.rpc details
// of a failed call, from its `grpc-status-details-bin` trailer, with the protos' field names; a detail the
// error does not carry is absent ({} for an error without details, e.g. UNAVAILABLE from the channel).
function errorDetails(err) {
  const [raw] = (err && err.metadata && err.metadata.get('grpc-status-details-bin')) || [];
  if (!raw) return {};
  const out = {};
  for (const detail of RPC.lookupType('google.rpc.Status').decode(raw).details) {
    const name = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1); // type.googleapis.com/google.rpc.X
    const short = name.replace(/^google\.rpc\./, '');
    if (name === short || !DETAILS.includes(short)) continue;
    const type = RPC.lookupType(name);
    out[short] = type.toObject(type.decode(detail.value), { defaults: true, arrays: true, objects: true });
  }
  return out;
}

module.exports = { createClient, errorDetails, load, serviceConfig, status: grpc.status };
