#!/usr/bin/env node
// A test client in Node: what a real Node tool does, with http.get and no timeout of its own.
// Prints `result NAME SECONDS` when its request ends (NAME is `ok` or the error's code, such as
// ETIMEDOUT), flushed, like tests/programs/client.py.
//
//   get URL        http.get(url) through Node's global agent: waits for an answer
//   session URL    one GET through a keep-alive agent, prints `first-done`, waits for a line on
//                  stdin, then a second GET on the same pooled connection (the request that
//                  goes into a dead link)

"use strict";

const fs = require("fs");
const http = require("http");
const readline = require("readline");

function say(...words) {
  // process.stdout to a pipe is asynchronous in Node; a synchronous write keeps the line order
  // and gets the line out before the process exits.
  fs.writeSync(1, words.join(" ") + "\n");
}

// One GET; calls done(outcome) once with "ok" or the error's code (or its name).
function get(url, agent, done) {
  let finished = false;
  const finish = (outcome) => {
    if (!finished) {
      finished = true;
      done(outcome);
    }
  };
  const req = http.get(url, { agent }, (res) => {
    res.on("data", () => {});
    res.on("end", () => finish("ok"));
    res.on("error", (e) => finish(e.code || e.name));
  });
  req.on("error", (e) => finish(e.code || e.name));
}

function timed(url, agent, then) {
  const start = process.hrtime.bigint();
  get(url, agent, (outcome) => {
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    say("result", outcome, seconds.toFixed(2));
    if (then) then();
  });
}

const [mode, url] = process.argv.slice(2);
if (mode === "get") {
  timed(url, undefined);
} else if (mode === "session") {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  get(url, agent, (outcome) => {
    if (outcome !== "ok") {
      say("first-failed", outcome);
      process.exit(1);
    }
    say("first-done");
    const rl = readline.createInterface({ input: process.stdin });
    rl.once("line", () => {
      rl.close();
      timed(url, agent, () => process.exit(0));
    });
  });
} else {
  say("usage: node_get.js get|session URL");
  process.exit(2);
}
