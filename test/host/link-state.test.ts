import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientId } from '../../shared/client-id.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN } from '../../shared/scheme.js';
import {
  ID_COUNT,
  type Link,
  type LinkAttachment,
  type LinkPair,
  type LinkState,
  StateError,
  allocateLink,
  allocateLinks,
  allocateMany,
  claimsDevicePrefix,
  conflictingDevicePrefix,
  conflictingNetnsPrefix,
  emptyState,
  forgetLink,
  forgetVm,
  isRecordedSocket,
  linkById,
  lookupLink,
  parseState,
  preferredId,
  recordedMtu,
  recordedNetnsPrefix,
  restorePairs,
  sameState,
  serializeState,
  setAttachment,
  setAttachments,
  unlistedLinks,
  withDevicePrefix,
  withNetnsPrefix,
} from '../../host/link-state.js';
import { DEVICE_PREFIX_MAX, type DevicePrefix, devicePrefix } from '../../host/device-names.js';
import { ATTACH_MODES, type AttachMode, parseAttachChoice } from '../../host/attach-mode.js';
import { type VmName, isVmName, vmName } from '../../host/vm-name.js';
import { UNIX_SOCKET_PATH_MAX } from '../../shared/unix-socket-path.js';
import { linkReport } from '../../host/linker-types.js';

const vmNames = fc.constantFrom('netvm', 'vpnvm', 'torvm', 'appvm-lynx', 'appvm-catgirl', 'a', 'b', 'c').map(vmName);
const pairs = fc.tuple(vmNames, vmNames).filter(([c, p]) => c !== p).map(([client, provider]): LinkPair => ({ client, provider }));
type Op = { op: 'allocate'; pair: LinkPair } | { op: 'forget'; pair: LinkPair };
const ops = fc.array(
  fc.oneof(pairs.map((pair): Op => ({ op: 'allocate', pair })), pairs.map((pair): Op => ({ op: 'forget', pair }))),
  { maxLength: 60 },
);

function apply(state: LinkState, op: Op): LinkState {
  return op.op === 'allocate' ? allocateLink(state, op.pair).state : forgetLink(state, op.pair).state;
}

function checkInvariants(state: LinkState): void {
  const ids = state.links.map((l) => l.id);
  expect(new Set(ids).size).toBe(ids.length);
  expect(new Set(state.links.map((l) => `${l.client}\n${l.provider}`)).size).toBe(ids.length);
  expect([...ids].sort((a, b) => a - b)).toEqual(ids);
  for (const id of ids) expect(id >= CLIENT_ID_MIN && id <= CLIENT_ID_MAX).toBe(true);
}

/** A state holding every id but the given ones, by synthetic pairs. */
function fullState(except: readonly number[] = []): LinkState {
  const links: Link[] = [];
  for (let id = CLIENT_ID_MIN; id <= CLIENT_ID_MAX; id++) {
    if (!except.includes(id)) links.push({ client: vmName(`c${id}`), provider: vmName('p'), id: clientId(id) });
  }
  return { version: 2, links };
}

describe('allocation (properties)', () => {
  it('never gives two connections the same id, and keeps the state well-formed', () => {
    fc.assert(
      fc.property(ops, (sequence) => {
        let state = emptyState();
        for (const op of sequence) {
          state = apply(state, op);
          checkInvariants(state);
        }
      }),
    );
  });

  it('gives a recorded pair its id back, whatever else happens, until it is forgotten', () => {
    fc.assert(
      fc.property(ops, pairs, ops, (before, pair, after) => {
        let state = before.reduce(apply, emptyState());
        const first = allocateLink(state, pair);
        state = first.state;
        for (const op of after.filter((o) => !(o.op === 'forget' && o.pair.client === pair.client && o.pair.provider === pair.provider))) state = apply(state, op);
        const again = allocateLink(state, pair);
        expect(again.link.id).toBe(first.link.id);
        expect(again.created).toBe(false);
        expect(again.state).toBe(state);
      }),
    );
  });

  it('gives a pair its preferred (hash) id when that is free', () => {
    fc.assert(
      fc.property(pairs, (pair) => {
        expect(allocateLink(emptyState(), pair).link.id).toBe(preferredId(pair));
      }),
    );
  });

  it('forget releases the id and only that record', () => {
    fc.assert(
      fc.property(ops, pairs, (sequence, pair) => {
        const { state, link } = allocateLink(sequence.reduce(apply, emptyState()), pair);
        const { state: after, forgotten } = forgetLink(state, pair);
        expect(forgotten).toEqual(link);
        expect(lookupLink(after, pair)).toBeUndefined();
        expect(linkById(after, link.id)).toBeUndefined();
        expect(after.links).toEqual(state.links.filter((l) => l !== link));
      }),
    );
  });

  it('serialize then parse gives the same state', () => {
    fc.assert(
      fc.property(ops, (sequence) => {
        const state = sequence.reduce(apply, emptyState());
        expect(parseState(serializeState(state), 'test')).toEqual(state);
      }),
    );
  });
});

describe('allocation (examples)', () => {
  it('allocates several providers for one client, idempotently', () => {
    const [client, net, vpn] = [vmName('appvm'), vmName('netvm'), vmName('vpnvm')];
    const first = allocateLinks(emptyState(), client, [net, vpn]);
    expect(first.links.map((l) => l.provider)).toEqual(['netvm', 'vpnvm']);
    expect(first.links[0]?.id).not.toBe(first.links[1]?.id);
    const again = allocateLinks(first.state, client, [net, vpn]);
    expect(again.links).toEqual(first.links);
    expect(again.state).toBe(first.state);
  });

  it('probes upwards, wrapping, when the preferred id is taken', () => {
    const pair = { client: vmName('appvm'), provider: vmName('netvm') };
    const preferred = preferredId(pair);
    const taken: LinkState = { version: 2, links: [{ client: vmName('x'), provider: vmName('y'), id: preferred }] };
    expect(allocateLink(taken, pair).link.id).toBe(preferred === CLIENT_ID_MAX ? CLIENT_ID_MIN : preferred + 1);
    expect(allocateLink(fullState([CLIENT_ID_MIN]), pair).link.id).toBe(CLIENT_ID_MIN);
    expect(allocateLink(fullState([CLIENT_ID_MAX]), pair).link.id).toBe(CLIENT_ID_MAX);
  });

  it('reports exhaustion clearly', () => {
    const full = fullState();
    expect(full.links).toHaveLength(ID_COUNT);
    const pair = { client: vmName('appvm'), provider: vmName('netvm') };
    expect(() => allocateLink(full, pair)).toThrow(expect.objectContaining({ name: 'StateError', kind: 'exhausted', message: expect.stringContaining('forget') }));
    // A pair already recorded still gets its id in a full state.
    const recorded = full.links[100];
    if (recorded === undefined) throw new Error('fixture');
    expect(allocateLink(full, recorded).link.id).toBe(recorded.id);
  });

  it('refuses to link a VM to itself', () => {
    expect(() => allocateLink(emptyState(), { client: vmName('a'), provider: vmName('a') })).toThrow(expect.objectContaining({ kind: 'self-link' }));
  });

  it('forgetVm drops every link of a VM on either side', () => {
    let state = emptyState();
    state = allocateLinks(state, vmName('app'), [vmName('vpn'), vmName('net')]).state;
    state = allocateLinks(state, vmName('vpn'), [vmName('net')]).state;
    state = allocateLinks(state, vmName('other'), [vmName('net')]).state;
    const { state: after, forgotten } = forgetVm(state, vmName('vpn'));
    expect(forgotten).toHaveLength(2);
    expect(after.links.map((l) => `${l.client}>${l.provider}`).sort()).toEqual(['app>net', 'other>net']);
    expect(forgetVm(after, vmName('nobody')).state).toBe(after);
  });
});

describe('parseState', () => {
  const kindOf = (text: string): string | undefined => {
    try {
      parseState(text, '/state/links.json');
      return undefined;
    } catch (error) {
      expect(error).toBeInstanceOf(StateError);
      expect((error as StateError).message).toContain('/state/links.json');
      return (error as StateError).kind;
    }
  };

  it('reads the documented format', () => {
    const state = parseState('{"version":2,"devicePrefix":"sn","links":[{"client":"appvm-lynx","provider":"netvm","id":42310}]}', 'x');
    expect(state.links).toEqual([{ client: 'appvm-lynx', provider: 'netvm', id: 42310 }]);
    expect(state.devicePrefix).toBe('sn');
    expect(serializeState(state)).toBe('{\n  "version": 2,\n  "devicePrefix": "sn",\n  "links": [\n    {"client":"appvm-lynx","provider":"netvm","id":42310}\n  ]\n}\n');
    expect(serializeState(emptyState())).toBe('{\n  "version": 2,\n  "links": []\n}\n');
  });

  it('gives each kind of corruption its own clear error', () => {
    expect(kindOf('')).toBe('not-json');
    expect(kindOf('{"version":1,"links":[')).toBe('not-json');
    expect(kindOf('[]')).toBe('bad-schema');
    expect(kindOf('{"links":[]}')).toBe('bad-schema');
    expect(kindOf('{"version":4,"links":[]}')).toBe('unsupported-version');
    expect(kindOf('{"version":0,"links":[]}')).toBe('bad-schema');
    expect(kindOf('{"version":1}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[],"extra":0}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"../x","provider":"netvm","id":1}]}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"b","id":0}]}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"b","id":65535}]}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"b","id":"1"}]}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"a","id":1}]}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"b","id":1,"x":1}]}')).toBe('bad-schema');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"b","id":1},{"client":"c","provider":"b","id":1}]}')).toBe('conflict');
    expect(kindOf('{"version":1,"links":[{"client":"a","provider":"b","id":1},{"client":"a","provider":"b","id":2}]}')).toBe('conflict');
  });

  it('never accepts arbitrary text silently as something else', () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        try {
          const state = parseState(text, 'x');
          checkInvariants(state);
        } catch (error) {
          expect(error).toBeInstanceOf(StateError);
        }
      }),
    );
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        try {
          checkInvariants(parseState(JSON.stringify(value), 'x'));
        } catch (error) {
          expect(error).toBeInstanceOf(StateError);
        }
      }),
    );
  });
});

describe('unlistedLinks', () => {
  it("gives exactly a client's links that are up to providers its config no longer names", () => {
    const modes = fc.option(fc.constant({ client: 'netns', provider: 'netns' } as const), { nil: undefined });
    fc.assert(
      fc.property(ops, fc.array(fc.tuple(pairs, modes), { maxLength: 20 }), vmNames, fc.subarray(['netvm', 'vpnvm', 'torvm', 'a', 'b'].map(vmName)), (sequence, attachments, client, listed) => {
        const state = setAttachments(sequence.reduce(apply, emptyState()), attachments.map(([pair, attached]) => ({ pair, attached })));
        const found = unlistedLinks(state, client, listed);
        const expected = state.links.filter((link) => link.client === client && link.attached !== undefined && !listed.includes(link.provider));
        expect(found).toEqual(expected);
      }),
    );
  });

  it('takes down the link to a provider dropped from the list, not one already down', () => {
    const [lynx, netvm, vpnvm, torvm] = ['appvm-lynx', 'netvm', 'vpnvm', 'torvm'].map(vmName) as [VmName, VmName, VmName, VmName];
    let state = allocateMany(emptyState(), [netvm, vpnvm, torvm].map((provider) => ({ client: lynx, provider }))).state;
    const up = { client: 'qemu', provider: 'netns' } as const;
    state = setAttachments(state, [netvm, vpnvm].map((provider) => ({ pair: { client: lynx, provider }, attached: up })));
    expect(unlistedLinks(state, lynx, [netvm]).map((link) => link.provider)).toEqual([vpnvm]);
    expect(unlistedLinks(state, lynx, [netvm, vpnvm])).toEqual([]);
    expect(unlistedLinks(state, vpnvm, [])).toEqual([]);
  });
});

describe('recorded attachment', () => {
  it('round-trips through the file and is cleared by setAttachment(undefined)', () => {
    const pair = { client: vmName('appvm-lynx'), provider: vmName('netvm') };
    const linked = allocateLink(emptyState(), pair).state;
    const attached = setAttachment(linked, pair, { client: 'qemu', provider: 'netns' });
    const reread = parseState(serializeState(attached), 'test');
    expect(reread.links[0]?.attached).toEqual({ client: 'qemu', provider: 'netns' });
    expect(setAttachment(reread, pair, undefined).links[0]).not.toHaveProperty('attached');
  });

  it('writes each link as the JSON of its fields, in a fixed order', () => {
    const modes = fc.constantFrom<AttachMode | undefined>(undefined, ...ATTACH_MODES);
    fc.assert(
      fc.property(ops, fc.array(fc.tuple(pairs, modes, modes), { maxLength: 10 }), (sequence, attachments) => {
        const state = setAttachments(
          sequence.reduce(apply, emptyState()),
          attachments.map(([pair, client, provider]) => ({ pair, attached: client === undefined || provider === undefined ? undefined : { client, provider } })),
        );
        const expected = state.links.map(({ client, provider, id, attached }) =>
          JSON.stringify(attached === undefined ? { client, provider, id } : { client, provider, id, attached }),
        );
        const lines = serializeState(state).split('\n').filter((line) => line.startsWith('    ')).map((line) => line.trim().replace(/,$/, ''));
        expect(lines).toEqual(expected);
      }),
    );
  });

  it('sameState holds exactly when the file texts are equal', () => {
    const modes = fc.constantFrom<AttachMode | undefined>(undefined, ...ATTACH_MODES);
    const attachOps = fc.array(fc.tuple(pairs, modes, modes), { maxLength: 10 });
    const build = (sequence: Op[], attachments: [LinkPair, AttachMode | undefined, AttachMode | undefined][]): LinkState =>
      setAttachments(
        sequence.reduce(apply, emptyState()),
        attachments.map(([pair, client, provider]) => ({
          pair,
          attached: client === undefined || provider === undefined ? undefined : { client, provider },
        })),
      );
    fc.assert(
      fc.property(ops, attachOps, ops, attachOps, (opsA, attachA, opsB, attachB) => {
        const a = build(opsA, attachA);
        const b = build(opsB, attachB);
        expect(sameState(a, b)).toBe(serializeState(a) === serializeState(b));
        expect(sameState(a, build(opsA, attachA))).toBe(true);
      }),
    );
  });

  it('unlink keeps the modes and MTU a link had ("unlinked", version 3, no sockets), a link attached again drops them, and a file without any is version 2', () => {
    const pair = { client: vmName('appvm-lynx'), provider: vmName('netvm') };
    const linked = allocateLink(emptyState(), pair).state;
    const attached = setAttachment(linked, pair, { client: 'qemu', provider: 'netns', clientSocket: '/run/vm/appvm-lynx/qmp.sock', mtu: 9000 });
    const down = setAttachment(attached, pair, undefined);
    expect(down.links[0]).not.toHaveProperty('attached');
    expect(down.links[0]?.unlinked).toEqual({ client: 'qemu', provider: 'netns', mtu: 9000 });
    const text = serializeState(down);
    expect(text).toContain('"version": 3,');
    expect(text).toContain('{"client":"appvm-lynx","provider":"netvm","id":' + String(down.links[0]?.id) + ',"unlinked":{"client":"qemu","provider":"netns","mtu":9000}}');
    expect(parseState(text, 'test')).toEqual(down);
    expect(sameState(down, linked)).toBe(false);
    // Taken down again (unlink of a link down), it keeps them; attached again, they go.
    expect(setAttachment(down, pair, undefined)).toEqual(down);
    const again = setAttachment(down, pair, { client: 'none', provider: 'netns' });
    expect(again.links[0]).not.toHaveProperty('unlinked');
    expect(serializeState(again)).toContain('"version": 2,');
    // Forgotten, nothing is left of it.
    expect(forgetLink(down, pair).state.links).toEqual([]);
    // Only in version 3, never with "attached", never with sockets; a file of version 4 is a newer one's.
    const id = String(down.links[0]?.id);
    const entry = (fields: string): string => `{"version":3,"links":[{"client":"appvm-lynx","provider":"netvm","id":${id},${fields}}]}`;
    expect(() => parseState(text.replace('"version": 3', '"version": 2'), 'test')).toThrow(expect.objectContaining({ kind: 'bad-schema', message: expect.stringMatching(/unknown key "unlinked"/) }));
    for (const bad of ['"unlinked":{"client":"none","provider":"none"},"attached":{"client":"none","provider":"none"}', '"unlinked":{"client":"qemu","provider":"none","clientSocket":"/a.sock"}', '"unlinked":{"client":"kvm","provider":"none"}']) {
      expect(() => parseState(entry(bad), 'test'), bad).toThrow(expect.objectContaining({ kind: 'bad-schema' }));
    }
    expect(() => parseState(text.replace('"version": 3', '"version": 4'), 'test')).toThrow(expect.objectContaining({ kind: 'unsupported-version' }));
  });

  it('refuses a malformed attachment', () => {
    const text = '{"version":1,"links":[{"client":"a","provider":"b","id":5,"attached":{"client":"kvm","provider":"netns"}}]}';
    expect(() => parseState(text, 'test')).toThrow(expect.objectContaining({ kind: 'bad-schema' }));
  });
});

describe('recorded VMM sockets', () => {
  // Paths the state records: absolute, up to 107 bytes, some of their characters non-ASCII.
  const socketPaths = fc
    .string({ unit: fc.constantFrom('a', 'z', '0', '/', '.', '-', '_', ' ', '{', '}', 'é', '😀'), maxLength: 60 })
    .map((rest) => `/${rest}`)
    .filter((path) => Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX);
  const vmmMode = fc.constantFrom<AttachMode>('qemu', 'cloud-hypervisor');
  /** A side: its mode, and a socket where it is a VMM's (or not: a record written before sockets were). */
  const side = fc.oneof(
    fc.constantFrom<AttachMode>('none', 'netns').map((mode) => ({ mode, socket: undefined })),
    fc.tuple(vmmMode, fc.option(socketPaths, { nil: undefined })).map(([mode, socket]) => ({ mode, socket })),
  );
  /** A link MTU recorded (none: 1500, or a record written before the MTU was). */
  const mtu = fc.option(
    fc.integer({ min: 68, max: 65535 }).filter((value) => value !== 1500),
    { nil: undefined },
  );
  const attachment = fc.option(
    fc.tuple(side, side, mtu).map(
      ([client, provider, linkMtu]): LinkAttachment => ({
        client: client.mode,
        provider: provider.mode,
        ...(client.socket === undefined ? {} : { clientSocket: client.socket }),
        ...(provider.socket === undefined ? {} : { providerSocket: provider.socket }),
        ...(linkMtu === undefined ? {} : { mtu: linkMtu }),
      }),
    ),
    { nil: undefined },
  );
  const withAttachments = (sequence: Op[], attachments: [LinkPair, LinkAttachment | undefined][]): LinkState =>
    setAttachments(sequence.reduce(apply, emptyState()), attachments.map(([pair, attached]) => ({ pair, attached })));
  const attachOps = fc.array(fc.tuple(pairs, attachment), { maxLength: 10 });

  it('round-trip through the file, each link written as the JSON of its fields, and sameState holds exactly when the texts are equal', () => {
    fc.assert(
      fc.property(ops, attachOps, ops, attachOps, (opsA, attachA, opsB, attachB) => {
        const state = withAttachments(opsA, attachA);
        const text = serializeState(state);
        expect(parseState(text, 'test')).toEqual(state);
        expect(serializeState(parseState(text, 'test'))).toBe(text);
        const lines = text.split('\n').filter((line) => line.startsWith('    ')).map((line) => line.trim().replace(/,$/, ''));
        expect(lines).toEqual(state.links.map(({ client, provider, id, attached }) => JSON.stringify(attached === undefined ? { client, provider, id } : { client, provider, id, attached })));
        const other = withAttachments(opsB, attachB);
        expect(sameState(state, other)).toBe(text === serializeState(other));
      }),
    );
  });

  it('a file written before sockets were recorded reads as before, and is written back as it was (but for the version)', () => {
    const old =
      '{\n  "version": 1,\n  "links": [\n' +
      '    {"client":"appvm-lynx","provider":"netvm","id":42,"attached":{"client":"qemu","provider":"cloud-hypervisor"}},\n' +
      '    {"client":"appvm-catgirl","provider":"netvm","id":43}\n  ]\n}\n';
    const state = parseState(old, 'test');
    expect(state.links).toEqual([
      { client: 'appvm-lynx', provider: 'netvm', id: 42, attached: { client: 'qemu', provider: 'cloud-hypervisor' } },
      { client: 'appvm-catgirl', provider: 'netvm', id: 43 },
    ]);
    expect(serializeState(state)).toBe(old.replace('"version": 1', '"version": 2'));
    // Any state without sockets is written as before: no socket key in it.
    const modes = fc.constantFrom<AttachMode | undefined>(undefined, ...ATTACH_MODES);
    fc.assert(
      fc.property(ops, fc.array(fc.tuple(pairs, modes, modes), { maxLength: 10 }), (sequence, attachments) => {
        const state = setAttachments(
          sequence.reduce(apply, emptyState()),
          attachments.map(([pair, client, provider]) => ({ pair, attached: client === undefined || provider === undefined ? undefined : { client, provider } })),
        );
        expect(serializeState(state)).not.toMatch(/Socket/);
      }),
    );
  });

  it('records a link MTU in its attachment ("mtu", an integer from 68 to 65535), refuses any other as malformed, and reads a record without one as 1500 (recordedMtu)', () => {
    const fileWith = (attached: unknown): string => JSON.stringify({ version: 2, links: [{ client: 'a', provider: 'b', id: 5, attached }] });
    for (const bad of [0, 67, 65536, 1500.5, '9000', null, [9000]]) {
      expect(() => parseState(fileWith({ client: 'netns', provider: 'netns', mtu: bad }), 'test'), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ kind: 'bad-schema', message: expect.stringMatching(/links\[0\]\.attached must be .*"mtu", where there, an integer from 68 to 65535/) }),
      );
    }
    const kept = parseState(fileWith({ client: 'qemu', provider: 'netns', clientSocket: '/run/vm/a/qmp.sock', mtu: 9000 }), 'test');
    expect(kept.links[0]?.attached).toEqual({ client: 'qemu', provider: 'netns', clientSocket: '/run/vm/a/qmp.sock', mtu: 9000 });
    expect(recordedMtu(kept.links[0]?.attached)).toBe(9000);
    expect(serializeState(kept)).toContain('"attached":{"client":"qemu","provider":"netns","clientSocket":"/run/vm/a/qmp.sock","mtu":9000}}');
    const before = parseState(fileWith({ client: 'netns', provider: 'netns' }), 'test');
    expect(recordedMtu(before.links[0]?.attached)).toBe(1500);
    expect(recordedMtu(undefined)).toBe(1500);
    // One that records 1500 (a file edited by hand) reads as one that records none: 1500 is no MTU
    // of its own, which link, list and show say only where not 1500 (an "mtu" of 1500 in JSON, `mtu 1500` in text).
    const explicit = parseState(fileWith({ client: 'netns', provider: 'netns', mtu: 1500 }), 'test');
    expect(explicit.links[0]?.attached).toEqual({ client: 'netns', provider: 'netns' });
    expect(linkReport(explicit.links[0]!, { devicePrefix: devicePrefix('sn'), attach: parseAttachChoice([]) })).not.toHaveProperty('mtu');
    expect(sameState(explicit, before)).toBe(true);
    // An MTU is part of how a link is attached: a change of it alone is a change of the state.
    expect(sameState(kept, setAttachment(kept, { client: vmName('a'), provider: vmName('b') }, { client: 'qemu', provider: 'netns', clientSocket: '/run/vm/a/qmp.sock' }))).toBe(false);
  });

  it('records the netns prefix ("netnsPrefix") while a link is up in netns mode, none otherwise, and refuses a malformed one', () => {
    const pair = { client: vmName('a'), provider: vmName('b') };
    const allocated = allocateLink(withDevicePrefix(emptyState(), devicePrefix('sn')), pair).state;
    const netns = withNetnsPrefix(setAttachment(allocated, pair, { client: 'netns', provider: 'none' }), 'vm-');
    const text = serializeState(netns);
    expect(text).toContain('\n  "devicePrefix": "sn",\n  "netnsPrefix": "vm-",\n');
    expect(parseState(text, 'test')).toEqual(netns);
    expect(recordedNetnsPrefix(parseState(text, 'test'))).toBe('vm-');
    // No prefix is a prefix too: recorded as "", so that a run given another is told apart from a file that records none.
    expect(serializeState(withNetnsPrefix(netns, ''))).toContain('"netnsPrefix": "",');
    expect(conflictingNetnsPrefix(parseState(serializeState(withNetnsPrefix(netns, '')), 'test'), 'vm-')).toBe('');
    expect(conflictingNetnsPrefix(netns, 'other-')).toBe('vm-');
    expect(conflictingNetnsPrefix(netns, 'vm-')).toBeUndefined();
    // With no link up in netns mode, none is written (the file as before), and none conflicts.
    const switched = setAttachment(netns, pair, { client: 'qemu', provider: 'none' });
    for (const state of [switched, setAttachment(switched, pair, undefined)]) {
      expect(serializeState(state)).not.toContain('netnsPrefix');
      expect(conflictingNetnsPrefix(state, 'other-')).toBeUndefined();
      expect(sameState(state, { ...state, netnsPrefix: 'other-' })).toBe(true);
    }
    // Taken down by unlink from netns mode, it is kept (the next link brings that side back in
    // <prefix><vm>), but conflicts with no other: no interface is in those namespaces now.
    const unlinked = setAttachment(netns, pair, undefined);
    expect(serializeState(unlinked)).toContain('"netnsPrefix": "vm-",');
    expect(recordedNetnsPrefix(parseState(serializeState(unlinked), 'test'))).toBe('vm-');
    expect(conflictingNetnsPrefix(unlinked, 'other-')).toBeUndefined();
    expect(sameState(unlinked, { ...unlinked, netnsPrefix: 'other-' })).toBe(false);
    // A file written before the prefix was recorded: none, so the run's is taken.
    const older = parseState(text.replace('\n  "netnsPrefix": "vm-",', ''), 'test');
    expect(older.netnsPrefix).toBeUndefined();
    expect(conflictingNetnsPrefix(older, 'other-')).toBeUndefined();
    expect(sameState(older, netns)).toBe(false);
    for (const bad of ['../x', 'a'.repeat(33), 5, null]) {
      expect(() => parseState(text.replace('"netnsPrefix": "vm-"', `"netnsPrefix": ${JSON.stringify(bad)}`), 'test'), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ kind: 'bad-schema', message: expect.stringMatching(/"netnsPrefix" must be a netns prefix as --netns-prefix takes it/) }),
      );
    }
    expect(() => parseState('{"version":1,"netnsPrefix":"vm-","links":[]}', 'test')).toThrow(expect.objectContaining({ kind: 'bad-schema', message: expect.stringMatching(/unknown key "netnsPrefix"/) }));
  });

  it('isRecordedSocket takes exactly an absolute path of at most 107 bytes that JSON writes as it is', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 120 }), fc.string({ unit: 'binary', maxLength: 120 }).map((rest) => `/${rest}`), socketPaths), (path) => {
        const wellFormed = Buffer.from(path, 'utf8').toString('utf8') === path;
        const plain = JSON.stringify(path) === `"${path}"`;
        expect(isRecordedSocket(path)).toBe(path.startsWith('/') && Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX && wellFormed && plain);
      }),
    );
    for (const value of [undefined, null, 7, ['/run/vm/a.sock'], '', 'run/vm/a.sock', `/${'a'.repeat(UNIX_SOCKET_PATH_MAX)}`, '/run/vm/a"b', '/run/vm/a\\b', '/run/vm/a\nb', '/run/vm/\ud800']) {
      expect(isRecordedSocket(value)).toBe(false);
    }
    expect(isRecordedSocket(`/${'a'.repeat(UNIX_SOCKET_PATH_MAX - 1)}`)).toBe(true);
  });

  it('refuses a malformed socket as it refuses other malformed fields: one not a path the state records, or of a side that is no VMM\'s', () => {
    const fileWith = (attached: unknown): string => JSON.stringify({ version: 1, links: [{ client: 'a', provider: 'b', id: 5, attached }] });
    for (const attached of [
      { client: 'qemu', provider: 'none', clientSocket: 'run/vm/a/qmp.sock' },
      { client: 'qemu', provider: 'none', clientSocket: `/${'a'.repeat(UNIX_SOCKET_PATH_MAX)}` },
      { client: 'qemu', provider: 'none', clientSocket: 42 },
      { client: 'qemu', provider: 'none', clientSocket: null },
      { client: 'qemu', provider: 'none', clientSocket: '' },
      { client: 'qemu', provider: 'none', clientSocket: '/run/vm/a\nb' },
      { client: 'none', provider: 'netns', providerSocket: '/run/vm/b/vmm' },
      { client: 'qemu', provider: 'none', providerSocket: '/run/vm/b/vmm' },
      { client: 'qemu', provider: 'none', socket: '/run/vm/a/qmp.sock' },
    ]) {
      expect(() => parseState(fileWith(attached), 'test'), JSON.stringify(attached)).toThrow(
        expect.objectContaining({ kind: 'bad-schema', message: expect.stringContaining('links[0].attached must be {"client": MODE, "provider": MODE}') }),
      );
    }
    expect(parseState(fileWith({ client: 'qemu', provider: 'cloud-hypervisor', clientSocket: '/run/vm/a/qmp.sock', providerSocket: '/run/vm/b/vmm' }), 'test').links[0]?.attached).toEqual({
      client: 'qemu',
      provider: 'cloud-hypervisor',
      clientSocket: '/run/vm/a/qmp.sock',
      providerSocket: '/run/vm/b/vmm',
    });
  });
});

describe('allocateMany', () => {
  it('gives exactly the ids that allocating the pairs one by one gives', () => {
    fc.assert(
      fc.property(fc.array(pairs, { maxLength: 30 }), fc.array(pairs, { maxLength: 30 }), (existing, wanted) => {
        let start = emptyState();
        for (const pair of existing) start = allocateLink(start, pair).state;
        let sequential = start;
        const one = wanted.map((pair) => {
          const allocation = allocateLink(sequential, pair);
          sequential = allocation.state;
          return allocation.link;
        });
        const many = allocateMany(start, wanted);
        expect(many.links).toEqual(one);
        expect(many.state).toEqual(sequential);
      }),
    );
  });
});

describe('restorePairs', () => {
  const modes = fc.constantFrom<AttachMode | undefined>(undefined, ...ATTACH_MODES);
  const attachOps = fc.array(fc.tuple(pairs, modes, modes), { maxLength: 10 });
  const attach = (state: LinkState, attachments: [LinkPair, AttachMode | undefined, AttachMode | undefined][]): LinkState =>
    setAttachments(
      state,
      attachments.map(([pair, client, provider]) => ({ pair, attached: client === undefined || provider === undefined ? undefined : { client, provider } })),
    );
  const key = (pair: LinkPair): string => `${pair.client}\n${pair.provider}`;

  it("gives the pairs undone their records from before the run (or none), leaves every other record as the run made it, and keeps the state well-formed", () => {
    fc.assert(
      fc.property(ops, attachOps, fc.array(pairs, { maxLength: 20 }), attachOps, fc.array(pairs, { maxLength: 8 }), (sequence, earlier, wanted, now, undone) => {
        // A state, then a run on it: ids allocated, attachments recorded.
        const before = attach(sequence.reduce(apply, emptyState()), earlier);
        const run = attach(allocateMany(before, wanted).state, now);
        const restored = restorePairs(run, before, undone);
        checkInvariants(restored);
        expect(parseState(serializeState(restored), 'test')).toEqual(restored);
        const undoneKeys = new Set(undone.map(key));
        for (const pair of undone) expect(lookupLink(restored, pair)).toEqual(lookupLink(before, pair));
        for (const link of run.links) if (!undoneKeys.has(key(link))) expect(lookupLink(restored, link)).toEqual(link);
        expect(restored.links.length).toBe(run.links.filter((link) => !undoneKeys.has(key(link))).length + before.links.filter((link) => undoneKeys.has(key(link))).length);
      }),
    );
  });

  it('undoing VM by VM is undoing them together, and undoing every pair the run touched gives the state before it', () => {
    fc.assert(
      fc.property(ops, fc.array(pairs, { maxLength: 20 }), attachOps, fc.array(pairs, { maxLength: 8 }), fc.array(pairs, { maxLength: 8 }), (sequence, wanted, now, first, second) => {
        const before = sequence.reduce(apply, emptyState());
        const run = attach(allocateMany(before, wanted).state, now);
        expect(restorePairs(restorePairs(run, before, first), before, second)).toEqual(restorePairs(run, before, [...first, ...second]));
        const touched = [...wanted, ...now.map(([pair]) => pair)];
        expect(sameState(restorePairs(run, before, touched), before)).toBe(true);
      }),
    );
  });

  it("gives back the netns prefix kept for a link unlink took down where no link is left up in netns mode (a VM undone alone), and keeps the run's where one is", () => {
    const [lynx, catgirl] = [{ client: vmName('appvm-lynx'), provider: vmName('netvm') }, { client: vmName('appvm-catgirl'), provider: vmName('netvm') }];
    const linked = withNetnsPrefix(setAttachment(allocateMany(withDevicePrefix(emptyState(), devicePrefix('sn')), [lynx, catgirl]).state, lynx, { client: 'netns', provider: 'netns' }), 'vm-');
    const before = setAttachment(linked, lynx, undefined);
    // A run given another prefix (no link up in netns mode) brings both up, lynx in netns mode.
    const run = withNetnsPrefix(setAttachments(before, [{ pair: lynx, attached: { client: 'netns', provider: 'netns' } }, { pair: catgirl, attached: { client: 'none', provider: 'none' } }]), 'other-');
    expect(recordedNetnsPrefix(restorePairs(run, before, [lynx]))).toBe('vm-');
    expect(serializeState(restorePairs(run, before, [lynx, catgirl]))).toBe(serializeState(before));
    expect(recordedNetnsPrefix(restorePairs(run, before, [catgirl]))).toBe('other-');
  });
});

describe('hostile values in a state file', () => {
  const fileOf = (entry: string): string => `{"version":1,"links":[${entry}]}`;
  const refusal = (text: string): StateError => {
    try {
      parseState(text, 'f');
    } catch (error) {
      if (error instanceof StateError) return error;
      throw error;
    }
    throw new Error('parsed');
  };

  it('a value nested deeper than JSON.stringify can write back is said as malformed, not a RangeError', () => {
    const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    for (const text of [fileOf(`{"client":${deep},"provider":"b","id":5}`), fileOf(`{"client":"a","provider":"b","id":${deep}}`), `{"version":${deep},"links":[]}`]) {
      expect(refusal(text)).toMatchObject({ kind: 'bad-schema', message: expect.stringContaining('a value nested too deeply to show') });
    }
  });

  it('a long value, or one a terminal would act on, is shown bounded and escaped: the message stays one short line', () => {
    for (const value of [JSON.stringify('x'.repeat(100_000)), `[${'1,'.repeat(50_000)}1]`, JSON.stringify('a\u009b2Jb'), JSON.stringify('a\u202eb')]) {
      const { message } = refusal(fileOf(`{"client":${value},"provider":"b","id":5}`));
      expect(message).toMatch(/^state file f is malformed: links\[0\]\.client is not a VM name: /);
      expect(message.length).toBeLessThan(400);
      expect(message).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202e]/);
    }
  });

  it('a file of millions of malformed entries is refused in bounded memory: the first few named, the rest counted', () => {
    // 3 million entries, 6 MB: a message kept for each takes some 300 MB, over the child's heap.
    const count = 3_000_000;
    const script = `
      const { parseState } = await import(${JSON.stringify(join(import.meta.dirname, '..', '..', 'dist', 'host', 'link-state.js'))});
      try { parseState('{"version":1,"links":[' + '0,'.repeat(${count - 1}) + '0]}', 'f'); } catch (error) { console.log(error.kind, error.message); }`;
    const out = execFileSync(process.execPath, ['--max-old-space-size=128', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(out).toBe(
      `bad-schema state file f is malformed: ${[0, 1, 2, 3, 4].map((index) => `links[${index}] is not an object`).join('; ')}; and ${count - 5} more. ` +
        'The file was left untouched: fix it, or move it aside to start over (every recorded id is then forgotten)\n',
    );
  });

  it('the quick path for well-formed entries agrees with the full check: an entry is taken exactly as the format says, else refused', () => {
    const modes = [...ATTACH_MODES, 'QEMU', '', 'netns '];
    const hostile = ['/run/vm/a/qmp.sock', `/${'s'.repeat(UNIX_SOCKET_PATH_MAX - 1)}`, `/${'s'.repeat(UNIX_SOCKET_PATH_MAX)}`, 'run/a.sock', '/run/a"b', '/run/a\\b', '/run/a\nb', '/run/\ud800', '/run/é😀', '', 7, null, ['/a']];
    const value = (pool: readonly unknown[]): fc.Arbitrary<unknown> => fc.oneof(fc.constantFrom(...pool), fc.constant(undefined));
    const attached = fc.oneof(
      fc.constant(undefined),
      fc.constantFrom(null, 'qemu', [], ['qemu', 'none']),
      fc.record({ client: value(modes), provider: value(modes), clientSocket: value(hostile), providerSocket: value(hostile), socket: fc.constantFrom(undefined, '/a') }),
    );
    const entry = fc.oneof(
      fc.constantFrom(null, 5, 'a', []),
      fc.record({
        client: value(['a', 'b', 'netvm', 'appvm-lynx', '../x', 'A', '', 'x'.repeat(65), 5, null]),
        provider: value(['a', 'b', 'netvm', '-x', 5]),
        id: value([1, 42310, CLIENT_ID_MAX, 0, CLIENT_ID_MAX + 1, 1.5, -1, '1', null]),
        attached,
        extra: fc.constantFrom(undefined, 1),
        proto: fc.boolean(),
      }),
    );
    const isPlain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
    const isVmm = (mode: unknown): boolean => mode === 'qemu' || mode === 'cloud-hypervisor';
    /** The format, as the README and link-state.ts's header say it. */
    const expected = (e: unknown): Link | undefined => {
      if (!isPlain(e) || Object.keys(e).some((key) => !['client', 'provider', 'id', 'attached'].includes(key))) return undefined;
      const { client, provider, id, attached: at } = e;
      if (typeof client !== 'string' || typeof provider !== 'string' || !isVmName(client) || !isVmName(provider) || client === provider) return undefined;
      if (typeof id !== 'number' || !Number.isInteger(id) || id < CLIENT_ID_MIN || id > CLIENT_ID_MAX) return undefined;
      const link = { client: vmName(client), provider: vmName(provider), id: clientId(id) };
      if (at === undefined) return link;
      if (!isPlain(at) || Object.keys(at).some((key) => !['client', 'provider', 'clientSocket', 'providerSocket'].includes(key))) return undefined;
      if (!ATTACH_MODES.includes(at['client'] as AttachMode) || !ATTACH_MODES.includes(at['provider'] as AttachMode)) return undefined;
      for (const [socket, mode] of [[at['clientSocket'], at['client']], [at['providerSocket'], at['provider']]]) {
        if (socket !== undefined && !(isVmm(mode) && isRecordedSocket(socket))) return undefined;
      }
      return { ...link, attached: at as unknown as LinkAttachment };
    };
    fc.assert(
      fc.property(entry, (generated) => {
        let e: unknown = generated;
        if (isPlain(generated)) {
          const { extra, proto, ...rest } = generated;
          const built: Record<string, unknown> = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
          if (isPlain(built['attached'])) built['attached'] = Object.fromEntries(Object.entries(built['attached']).filter(([, v]) => v !== undefined));
          if (extra !== undefined) built['extra'] = extra;
          if (proto === true) Object.defineProperty(built, '__proto__', { value: 1, enumerable: true });
          e = built;
        }
        const text = fileOf(JSON.stringify(e));
        const want = expected(JSON.parse(JSON.stringify(e)));
        if (want === undefined) expect(() => parseState(text, 'f')).toThrow(expect.objectContaining({ name: 'StateError', kind: 'bad-schema' }));
        else expect(parseState(text, 'f').links).toEqual([want]);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('recorded device prefix', () => {
  // Prefixes as --device-prefix takes them (device-names.ts).
  const prefixes = fc
    .tuple(fc.constantFrom('a', 's', 'z'), fc.string({ unit: fc.constantFrom('a', 'n', 'z', '0', '9', '_', '-'), maxLength: DEVICE_PREFIX_MAX - 1 }))
    .map(([first, rest]) => devicePrefix(first + rest));
  const link = '{"client":"appvm-lynx","provider":"netvm","id":42310}';

  it('reads a version 1 file (written before the prefix was recorded) as recording none, and writes it back as version 2, the prefix once one is given', () => {
    const old = `{\n  "version": 1,\n  "links": [\n    ${link}\n  ]\n}\n`;
    const state = parseState(old, 'test');
    expect(state.devicePrefix).toBeUndefined();
    expect(state.links).toEqual([{ client: 'appvm-lynx', provider: 'netvm', id: 42310 }]);
    expect(serializeState(state)).toBe(old.replace('"version": 1', '"version": 2'));
    const recorded = withDevicePrefix(state, devicePrefix('zz'));
    expect(serializeState(recorded)).toBe(`{\n  "version": 2,\n  "devicePrefix": "zz",\n  "links": [\n    ${link}\n  ]\n}\n`);
    expect(parseState(serializeState(recorded), 'test')).toEqual(recorded);
    // A version 1 file never had one: a prefix there was not written by spectrum-link.
    expect(() => parseState(`{"version":1,"devicePrefix":"zz","links":[${link}]}`, 'test')).toThrow(expect.objectContaining({ kind: 'bad-schema', message: expect.stringContaining('unknown key "devicePrefix"') }));
  });

  it('refuses a prefix in the file that --device-prefix would refuse, naming the key', () => {
    for (const bad of ['', 'Zz', '9a', 'a'.repeat(DEVICE_PREFIX_MAX + 1), 'a/b', 'a b', 'a\u202e', 'é', '-a', 5, null, true, ['sn'], { prefix: 'sn' }]) {
      const text = JSON.stringify({ version: 2, devicePrefix: bad, links: [] });
      expect(() => parseState(text, '/state/links.json'), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ kind: 'bad-schema', message: expect.stringMatching(/^state file \/state\/links\.json is malformed: "devicePrefix" must be a device prefix as --device-prefix takes it \(1 to 9 characters/) }),
      );
    }
    // Exactly what --device-prefix takes is taken.
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), (text) => {
        let given: DevicePrefix | undefined;
        try {
          given = devicePrefix(text);
        } catch {
          given = undefined;
        }
        const read = (): LinkState => parseState(JSON.stringify({ version: 2, devicePrefix: text, links: [] }), 'test');
        if (given === undefined) expect(read).toThrow(expect.objectContaining({ kind: 'bad-schema' }));
        else expect(read().devicePrefix).toBe(given);
      }),
    );
  });

  it('every change keeps the prefix, the file round-trips it, and sameState tells states apart by it', () => {
    fc.assert(
      fc.property(prefixes, prefixes, ops, fc.array(pairs, { maxLength: 5 }), (prefix, other, sequence, touched) => {
        const start = withDevicePrefix(emptyState(), prefix);
        const state = sequence.reduce(apply, start);
        expect(state.devicePrefix).toBe(prefix);
        const attached = setAttachments(state, touched.map((pair) => ({ pair, attached: { client: 'netns', provider: 'none' } })));
        expect(attached.devicePrefix).toBe(prefix);
        expect(allocateMany(attached, touched).state.devicePrefix).toBe(prefix);
        expect(restorePairs(attached, start, touched).devicePrefix).toBe(prefix);
        expect(forgetVm(attached, vmName('netvm')).state.devicePrefix).toBe(prefix);
        // Written with links or without (every one forgotten): the state keeps it.
        const read = parseState(serializeState(attached), 'test');
        expect(read).toEqual(attached);
        expect(sameState(read, attached)).toBe(true);
        const renamed = withDevicePrefix(attached, other);
        expect(sameState(attached, renamed)).toBe(prefix === other);
        expect(sameState(attached, renamed)).toBe(serializeState(attached) === serializeState(renamed));
      }),
    );
  });

  it('a state claims the devices of its prefix (its leftovers) where it records links or the prefix, as read from its file', () => {
    const pair = { client: vmName('appvm-lynx'), provider: vmName('netvm') };
    const linked = allocateLink(emptyState(), pair).state;
    // No file, a version 1 file with no link, one of version 2 written before the prefix was kept without links: none.
    expect(claimsDevicePrefix(emptyState())).toBe(false);
    expect(claimsDevicePrefix(parseState('{"version":1,"links":[]}', 'test'))).toBe(false);
    expect(claimsDevicePrefix(parseState('{"version":2,"links":[]}', 'test'))).toBe(false);
    // Links (a version 1 file's too, whose prefix is the one given), or the prefix kept once every link was forgotten.
    expect(claimsDevicePrefix(parseState(`{"version":1,"links":[${JSON.stringify(linked.links[0])}]}`, 'test'))).toBe(true);
    expect(claimsDevicePrefix(withDevicePrefix(linked, devicePrefix('zz')))).toBe(true);
    const forgotten = forgetLink(withDevicePrefix(linked, devicePrefix('zz')), pair).state;
    expect(claimsDevicePrefix(parseState(serializeState(forgotten), 'test'))).toBe(true);
  });

  it("an undo of a state's first links (restorePairs from a state that recorded no prefix) leaves it recording none where no link is left", () => {
    fc.assert(
      fc.property(prefixes, fc.uniqueArray(pairs, { minLength: 1, maxLength: 5, selector: (pair) => `${pair.client}\n${pair.provider}` }), (prefix, touched) => {
        const run = allocateMany(withDevicePrefix(emptyState(), prefix), touched).state;
        expect(run.devicePrefix).toBe(prefix);
        // Every pair undone: the state as it was, no prefix (nothing claims the devices named with it).
        const undone = restorePairs(run, emptyState(), touched);
        expect(undone).toEqual(emptyState());
        expect(claimsDevicePrefix(undone)).toBe(false);
        // Some undone, some kept: those keep the prefix they were recorded with.
        const [first, ...rest] = touched;
        if (rest.length > 0) expect(restorePairs(run, emptyState(), rest)).toEqual(expect.objectContaining({ devicePrefix: prefix, links: [expect.objectContaining({ client: first?.client, provider: first?.provider })] }));
        // A state that recorded it before (every link forgotten) keeps it.
        expect(restorePairs(run, withDevicePrefix(emptyState(), prefix), touched)).toEqual(withDevicePrefix(emptyState(), prefix));
      }),
    );
  });

  it('conflicts wherever the state records another prefix, its links all forgotten too', () => {
    const sn = devicePrefix('sn');
    const zz = devicePrefix('zz');
    const linked = allocateLink(emptyState(), { client: vmName('appvm-lynx'), provider: vmName('netvm') }).state;
    expect(conflictingDevicePrefix(withDevicePrefix(linked, zz), sn)).toBe(zz);
    expect(conflictingDevicePrefix(withDevicePrefix(linked, zz), zz)).toBeUndefined();
    // None recorded (a version 1 file): the prefix given is used, as before.
    expect(conflictingDevicePrefix(linked, sn)).toBeUndefined();
    // Never linked and none given yet: the prefix given is used.
    expect(conflictingDevicePrefix(emptyState(), sn)).toBeUndefined();
    // Every link forgotten: the state keeps its prefix (its next links are named with it).
    const forgotten = forgetLink(withDevicePrefix(linked, zz), { client: vmName('appvm-lynx'), provider: vmName('netvm') }).state;
    expect(forgotten.links).toEqual([]);
    expect(conflictingDevicePrefix(forgotten, sn)).toBe(zz);
    expect(conflictingDevicePrefix(parseState(serializeState(forgotten), 'test'), sn)).toBe(zz);
    expect(conflictingDevicePrefix(withDevicePrefix(emptyState(), zz), sn)).toBe(zz);
    // A link kept down (unlinked, id kept) still has its devices made under the recorded one by the next link.
    expect(conflictingDevicePrefix(setAttachment(withDevicePrefix(linked, zz), { client: vmName('appvm-lynx'), provider: vmName('netvm') }, undefined), sn)).toBe(zz);
  });
});
