// The peer on the same machine and file: llama.cpp, through the prebuilt CPU
// binaries of the node-llama-cpp npm package (which pick their best CPU
// variant at run time: zen4 = AVX-512 on AMD Zen 4/5), measured the way
// mistral-bench measures: ppN = one batch of N random tokens on an empty
// cache, tgM = M random tokens decoded one at a time after an 8-token prompt;
// medians of --reps runs after one unmeasured warm-up (page-in).
//
// Setup (npm registry only, ~700 MB of binaries):
//   mkdir -p /tmp/peer && cd /tmp/peer && npm init -y && npm install node-llama-cpp@3.22.1
//   cp scripts/peer-bench.mjs /tmp/peer/ && node /tmp/peer/peer-bench.mjs --model FILE.gguf
// (run from a copy beside node_modules: ES modules ignore NODE_PATH.)
//
// Options: --model FILE (required), --pp N (64), --tg M (16), --reps R (3),
// --threads T (2), --vocab V (32000; random ids are drawn from [100, V-100)),
// --mmap 0 (read the file into memory instead of mapping it), --verbose 1.
// Prints one JSON object.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
    const k = process.argv[i];
    if (!k.startsWith("--") || i + 1 >= process.argv.length) {
        console.error(`usage: peer-bench.mjs --model FILE [--pp N] [--tg M] [--reps R] [--threads T] [--vocab V] [--mmap 0] [--verbose 1]`);
        process.exit(2);
    }
    args[k.slice(2)] = process.argv[i + 1];
}
if (!args.model) {
    console.error("peer-bench.mjs: --model FILE is required");
    process.exit(2);
}
const pp = +(args.pp ?? 64), tg = +(args.tg ?? 16), reps = +(args.reps ?? 3);
const threads = +(args.threads ?? 2), vocab = +(args.vocab ?? 32000);

const llama = await getLlama({gpu: false, build: "never",
                              logLevel: args.verbose ? LlamaLogLevel.debug : LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: args.model, useMmap: args.mmap !== "0"});
const ctx = await model.createContext({contextSize: Math.max(1024, pp + tg + 16), batchSize: Math.max(512, pp),
                                       threads: {ideal: threads, min: threads}, sequences: 1,
                                       flashAttention: false});
let seed = 1;
const rnd = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return 100 + (seed >>> 8) % (vocab - 200); };
const toks = n => Array.from({length: n}, rnd);
const median = a => [...a].sort((x, y) => x - y)[a.length >> 1];

async function once() {
    let seq = ctx.getSequence();
    let t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(toks(pp));
    const p = pp / ((performance.now() - t0) / 1000);
    seq.dispose();
    seq = ctx.getSequence();
    await seq.evaluateWithoutGeneratingNewTokens(toks(8));
    // One token per decode call, its logits computed, no sampling: what
    // llama-bench's tg does (a sampler would add the same small cost to both).
    t0 = performance.now();
    for (let n = 0; n < tg; n++)
        await seq.evaluateWithoutGeneratingNewTokens(toks(1));
    const g = tg / ((performance.now() - t0) / 1000);
    seq.dispose();
    return [p, g];
}

await once();
const ppr = [], tgr = [];
for (let r = 0; r < reps; r++) {
    const [p, g] = await once();
    ppr.push(p);
    tgr.push(g);
}
console.log(JSON.stringify({peer: "llama.cpp (node-llama-cpp prebuilt CPU binaries)",
                            release: llama.llamaCppRelease, build: llama.buildType, system_info: llama.systemInfo,
                            model: args.model, threads,
                            pp, tg, pp_tok_s: +median(ppr).toFixed(2), tg_tok_s: +median(tgr).toFixed(2),
                            pp_runs: ppr.map(x => +x.toFixed(2)), tg_runs: tgr.map(x => +x.toFixed(2))}));
await llama.dispose();
