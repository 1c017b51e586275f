// The grpc-js twin of xds_client.py: an unmodified @grpc/grpc-js client with
// @grpc/grpc-js-xds registered, driven by JSON lines on stdin (same commands, same answers).
// NODE_PATH points at the node_modules the test installed.
"use strict";
const grpc = require("@grpc/grpc-js");
require("@grpc/grpc-js-xds").register();
const readline = require("readline");

const METHOD = "/proto.Api/ApiTest";
const clients = new Map();

function encodeRequest(text) {
  const data = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x0a, data.length]), data]);
}

function decodeResponse(buf) {
  return buf.length ? buf.subarray(2).toString() : "";
}

function callOnce(client, metadata, timeout, waitForReady) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of metadata) md.add(k, v);
    const options = { deadline: Date.now() + timeout * 1000 };
    if (waitForReady) options.waitForReady = true;
    client.makeUnaryRequest(METHOD, (x) => x, decodeResponse, encodeRequest("hi"), md, options,
      (err, out) => resolve(err ? { error: `${grpc.status[err.code]}: ${err.details}` } : { out }));
  });
}

async function run(command) {
  let client = clients.get(command.target);
  if (!client) {
    client = new grpc.Client(command.target, grpc.credentials.createInsecure());
    clients.set(command.target, client);
  }
  const answers = {};
  const errors = {};
  for (let i = 0; i < (command.calls || 1); i++) {
    const r = await callOnce(client, command.metadata || [], command.timeout || 2,
      command.wait_for_ready || false);
    if (r.error !== undefined) errors[r.error] = (errors[r.error] || 0) + 1;
    else {
      const who = r.out.split("|")[0];
      answers[who] = (answers[who] || 0) + 1;
    }
  }
  return { answers, errors };
}

const lines = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const result = await run(JSON.parse(queue.shift()));
    process.stdout.write(JSON.stringify(result) + "\n");
  }
  busy = false;
}
lines.on("line", (line) => { if (line.trim()) { queue.push(line); pump(); } });
lines.on("close", () => { const wait = () => (busy ? setTimeout(wait, 10) : process.exit(0)); wait(); });
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
