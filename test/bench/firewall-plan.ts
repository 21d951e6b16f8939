// `node dist/test/bench/firewall-plan.js [links]`: the JavaScript the agent spends planning one
// hot-plug's firewall change at N links (default 1000), nft itself excluded. Before: the whole
// model validated, listed and diffed, plus the agent's JSON comparison and filtered-links map;
// after: the agent's field comparison and advanceFirewallState. Pure: touches no namespace.
import { advanceFirewallState, firewallStateOf } from '../../guest/firewall/firewall-state.js';
import { type FirewallModel, sameFirewallModel, validateFirewallModel } from '../../guest/firewall/model.js';
import { desiredElements, diffElements, elementCommands } from '../../guest/firewall/ruleset.js';

const count = Number(process.argv[2] ?? 1000);
const ipOf = (index: number): string => `100.64.${index >> 8}.${index & 255}`;
/** A model as the planner builds it, fresh objects every time. */
const modelOf = (links: number): FirewallModel => ({
  providerLinks: Array.from({ length: links }, (_, index) => ({ ifname: `snp${index + 1}`, clientIp: ipOf(index + 1) })),
  uplinks: ['eth0'],
  allowedPairs: [{ from: ipOf(1), to: ipOf(2) }],
});
const ROUNDS = 2000;
// One link plugged in, then out again: each call sees a model one link away from the last.
const models = Array.from({ length: 64 }, (_, index) => modelOf(index % 2 === 0 ? count + 1 : count));

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

function before(): number[] {
  let lastText = JSON.stringify(modelOf(count));
  let applied = desiredElements(validateFirewallModel(modelOf(count)));
  const samples: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const model = models[round % models.length] ?? modelOf(count);
    const started = performance.now();
    const text = JSON.stringify(model);
    if (text !== lastText) {
      const desired = desiredElements(validateFirewallModel(model));
      const script = elementCommands(diffElements(applied, desired));
      if (script === '') throw new Error('expected a change');
      applied = desired;
      lastText = text;
      const filtered = new Map<string, string | null>([
        ...model.providerLinks.map((link) => [link.ifname, link.clientIp] as const),
        ...(model.isolatedLinks ?? []).map((name) => [name, null] as const),
      ]);
      if (filtered.size === 0) throw new Error('unreachable');
    }
    samples.push(performance.now() - started);
  }
  return samples;
}

function after(): number[] {
  let last = modelOf(count);
  let state = firewallStateOf(validateFirewallModel(last));
  const samples: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const model = models[round % models.length] ?? modelOf(count);
    const started = performance.now();
    if (!sameFirewallModel(model, last)) {
      const step = advanceFirewallState(state, model);
      if (elementCommands(step.diff) === '') throw new Error('expected a change');
      state = step.state;
      last = model;
    }
    samples.push(performance.now() - started);
  }
  return samples;
}

for (const [name, run] of [
  ['before (whole model)', before],
  ['after (changed links)', after],
] as const) {
  run(); // warm up
  const samples = run().slice(ROUNDS / 2);
  console.log(`${name}: median ${(median(samples) * 1000).toFixed(1)} µs per hot-plug at ${count} links`);
}
