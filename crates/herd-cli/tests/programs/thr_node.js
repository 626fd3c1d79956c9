// A node program: libuv's event loop (epoll, its eventfd, a thread pool) and two
// worker_threads (each an isolate of its own on a thread) hash each round and hand
// their results back by message; the main thread prints one line per round after a
// timer. Integer arithmetic with BigInt, combined in worker order: the output does not
// depend on scheduling. Exits with status 8.
//
// usage: node thr_node.js [ROUNDS]
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');

const MASK = (1n << 64n) - 1n;
function mix(x) {
  x ^= x >> 31n;
  x = (x * 0x9e3779b97f4a7c15n) & MASK;
  x ^= x >> 29n;
  return x;
}

if (!isMainThread) {
  parentPort.on('message', (round) => {
    let sum = 0n;
    for (let i = 0; i < 20000; i++) {
      sum = (sum + mix(BigInt(round) * 1000003n + BigInt(workerData.id) * 7919n + BigInt(i))) & MASK;
    }
    parentPort.postMessage({ id: workerData.id, sum: sum.toString(16) });
  });
} else {
  const rounds = process.argv.length > 2 ? Number(process.argv[2]) : 40;
  process.stderr.write(`mig-pid: ${process.pid}\n`); // for the migration tests
  const workers = [0, 1].map((id) => new Worker(__filename, { workerData: { id } }));
  let round = 0;
  const step = () => {
    const got = [];
    for (const w of workers) {
      w.once('message', (m) => {
        got[m.id] = m.sum;
        if (got.filter((s) => s !== undefined).length === workers.length) {
          let total = 0n;
          for (const s of got) total = mix(total ^ BigInt('0x' + s));
          process.stdout.write(`round ${round}: ${total.toString(16).padStart(16, '0')}\n`);
          round++;
          if (round === rounds) {
            for (const w of workers) w.terminate();
            process.exitCode = 8;
          } else {
            setTimeout(step, 20);
          }
        }
      });
      w.postMessage(round);
    }
  };
  step();
}
