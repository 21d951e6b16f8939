// A stand-in for cloud-hypervisor's REST API on a Unix socket in a temp dir, following its OpenAPI
// document (cloud-hypervisor/cloud-hypervisor vmm/src/api/openapi/cloud-hypervisor.yaml) for the
// three endpoints the linker uses:
//   PUT /api/v1/vm.add-net        NetConfig -> 200 PciDeviceInfo {id, bdf} (VM booted) | 204 (created,
//                                 not booted) | 400 (not a valid NetConfig) | 404 (no VM) | 409 (id taken) | 500
//   PUT /api/v1/vm.remove-device  {id}      -> 204 | 404 (no VM, or no such device)
//   GET /api/v1/vm.info                     -> 200 VmInfo {config, state, device_tree, ..} | 404 (no VM)
// Undocumented cases: other paths answer 404 and other methods 400 (what cloud-hypervisor's
// http_api appears to do; nothing here relies on it). It records every request and lets tests
// inject a status, a raw answer, or silence.
// Descriptors: like cloud-hypervisor (http_endpoint.rs, PutHandler for VmAddNet), vm.add-net
// takes the descriptors that come with the request (SCM_RIGHTS) as the NIC's tap queues, ignores
// any named in the body, keeps them open while the NIC is attached and closes them when it is
// removed. Node's server cannot receive descriptors, so each connection is held back until its
// first bytes arrive, their descriptors are copied out with a peek (host/vmm/tap-fd.ts), and only
// then is the connection handed to the HTTP server, which reads the bytes as usual.
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { type IncomingMessage, type Server as HttpServer, type ServerResponse, createServer } from 'node:http';
import { type Server, type Socket, createServer as createNetServer, isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peekRights, tapNameOf } from '../../../host/vmm/tap-fd.js';

export type FakeVmState = 'Created' | 'Running' | 'Paused' | 'Shutdown';

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  /** Parsed JSON body, or the raw text if it was not JSON, or undefined if there was none. */
  readonly body: unknown;
  /** For each descriptor that came with the request: the tap it is a queue of, or null if none. */
  readonly taps: readonly (string | null)[];
}

export interface InjectedAnswer {
  readonly status: number;
  readonly body?: string;
}

type Json = Record<string, unknown>;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

// NetConfig properties and their schema types; serde ignores properties it does not know.
const NET_CONFIG_TYPES: Readonly<Record<string, 'string' | 'integer' | 'boolean' | 'object'>> = {
  tap: 'string',
  ip: 'string',
  mask: 'string',
  mac: 'string',
  host_mac: 'string',
  mtu: 'integer',
  iommu: 'boolean',
  num_queues: 'integer',
  queue_size: 'integer',
  vhost_user: 'boolean',
  vhost_socket: 'string',
  vhost_mode: 'string',
  id: 'string',
  pci_segment: 'integer',
  pci_device_id: 'integer',
  rate_limiter_config: 'object',
  offload_tso: 'boolean',
  offload_ufo: 'boolean',
  offload_csum: 'boolean',
};

/** Why a body is not a valid NetConfig, or undefined if it is one. */
function netConfigProblem(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body is not a JSON object';
  for (const [key, value] of Object.entries(body)) {
    const type = NET_CONFIG_TYPES[key];
    if (type === undefined) continue;
    const ok =
      type === 'integer'
        ? Number.isInteger(value)
        : type === 'object'
          ? typeof value === 'object' && value !== null && !Array.isArray(value)
          : typeof value === type;
    if (!ok) return `invalid type for ${key}: expected ${type}`;
  }
  const net = body as Json;
  for (const key of ['mac', 'host_mac'] as const) {
    if (net[key] !== undefined && !MAC.test(String(net[key]))) return `Error parsing MAC address: ${String(net[key])}`;
  }
  if (net.ip !== undefined && isIP(String(net.ip)) === 0) return `invalid IP address: ${String(net.ip)}`;
  return undefined;
}

export class FakeCloudHypervisor {
  readonly requests: RecordedRequest[] = [];
  /** undefined: no VM created (every VM endpoint answers 404). */
  state: FakeVmState | undefined;
  /** config.net[] as cloud-hypervisor keeps it: hot-added NICs included, defaults filled in. */
  readonly nets: Json[] = [];
  /** Other devices of the device tree (not NICs), by id. */
  readonly otherDevices = new Set<string>();
  /** Answers to give instead of the real ones, per endpoint (e.g. 'vm.add-net'), in order. */
  readonly injected = new Map<string, InjectedAnswer[]>();
  /**
   * Answers decided per request, per endpoint, after any injected one: undefined lets the request
   * through (e.g. a VMM that takes one NIC and refuses the next).
   */
  readonly refuse = new Map<string, (request: RecordedRequest) => InjectedAnswer | undefined>();
  /** Accept requests but never answer them. */
  silent = false;
  /**
   * Endpoints whose work is done as usual, but whose answer is this one instead (null: none at
   * all): a VMM slower than the client's bound, or one that answers garbage after doing the work.
   */
  readonly answerAfterWork = new Map<string, InjectedAnswer | null>();
  private nextSlot = 3;
  private nextNet = 0;
  /** Descriptors that came with each connection's request. */
  private readonly rights = new WeakMap<Socket, number[]>();
  /** Tap queues of attached NICs, by NIC id (cloud-hypervisor holds them open). */
  private readonly tapQueues = new Map<string, number[]>();
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly socketPath: string,
    private readonly dir: string,
    private readonly server: Server,
    private readonly http: HttpServer,
  ) {}

  static async start(state?: FakeVmState): Promise<FakeCloudHypervisor> {
    const dir = mkdtempSync(join(tmpdir(), 'sn-vmm-ch-'));
    const socketPath = join(dir, 'api.sock');
    let fake: FakeCloudHypervisor | undefined;
    const http = createServer((req, res) => {
      fake?.handle(req, res);
    });
    const server = createNetServer({ pauseOnConnect: true }, (socket) => fake?.admit(socket));
    fake = new FakeCloudHypervisor(socketPath, dir, server, http);
    fake.state = state;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, resolve);
    });
    return fake;
  }

  /** Wait (up to a second) for the connection's first bytes, keep their descriptors, then serve it. */
  private admit(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      // Descriptors of a request that never reached a handler (malformed, or cut off).
      for (const fd of this.rights.get(socket) ?? []) closeSync(fd);
      this.rights.delete(socket);
    });
    // Node keeps a Unix socket's descriptor on its handle; there is no public accessor.
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    const started = Date.now();
    const poll = (): void => {
      if (socket.destroyed) return;
      const fds = fd === undefined ? [] : peekRights(fd);
      if (fds === null && Date.now() - started < 1000) {
        setTimeout(poll, 1);
        return;
      }
      this.rights.set(socket, fds ?? []);
      this.http.emit('connection', socket);
      socket.resume();
    };
    poll();
  }

  /** Answer the next request to this endpoint (e.g. 'vm.add-net') with status and body instead. */
  inject(endpoint: string, answer: InjectedAnswer): void {
    const queue = this.injected.get(endpoint) ?? [];
    queue.push(answer);
    this.injected.set(endpoint, queue);
  }

  /** Connections open now: a client that cleans up leaves none. */
  openConnections(): Promise<number> {
    return new Promise((resolve, reject) => this.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
  }

  /** Descriptors the fake holds as attached NICs' tap queues. */
  heldTapQueues(): number {
    return [...this.tapQueues.values()].reduce((sum, fds) => sum + fds.length, 0);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
    for (const fds of this.tapQueues.values()) for (const fd of fds) closeSync(fd);
    this.tapQueues.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      if (text !== '') {
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
      }
      const path = req.url ?? '';
      // Each connection carries one request; its descriptors belong to that request only.
      const fds = this.rights.get(req.socket) ?? [];
      this.rights.set(req.socket, []);
      const taps = fds.map((fd) => {
        try {
          return tapNameOf(fd);
        } catch {
          return null;
        }
      });
      const request: RecordedRequest = { method: req.method ?? '', path, body, taps };
      this.requests.push(request);
      const endpoint = path.replace(/^\/api\/v1\//, '');
      // Only vm.add-net keeps descriptors (when it adds the NIC); everything else drops them.
      let kept = false;
      const keep = (id: string): void => {
        kept = true;
        this.tapQueues.set(id, fds);
      };
      try {
        if (this.silent) return;
        const injected = this.injected.get(endpoint)?.shift();
        if (injected !== undefined) return send(res, injected.status, injected.body);
        const refused = this.refuse.get(endpoint)?.(request);
        if (refused !== undefined) return send(res, refused.status, refused.body);
        const route = ROUTES[endpoint];
        if (route === undefined || !path.startsWith('/api/v1/')) return send(res, 404);
        if (req.method !== route.method) return send(res, 400);
        const instead = this.answerAfterWork.get(endpoint);
        if (instead === undefined) return route.run(this, { body, fds, taps, keep }, res);
        route.run(this, { body, fds, taps, keep }, { writeHead: () => ({ end: () => undefined }) } as unknown as ServerResponse);
        if (instead !== null) send(res, instead.status, instead.body);
      } finally {
        if (!kept) for (const fd of fds) closeSync(fd);
      }
    });
  }

  addNet({ body, fds, taps, keep }: RequestWithRights, res: ServerResponse): void {
    if (this.state === undefined) return send(res, 404);
    const problem = text(body) ? 'body is not JSON' : netConfigProblem(body);
    if (problem !== undefined) return send(res, 400, `Error parsing JSON body: ${problem}`);
    // cloud-hypervisor: "Ignoring FDs sent via the HTTP request body".
    const { fds: _named, ...config } = body as Json;
    const id = typeof config.id === 'string' ? config.id : `_net${this.nextNet++}`;
    if (this.nets.some((net) => net.id === id) || this.otherDevices.has(id)) {
      return send(res, 409, `Error adding device to the VM: Identifier ${id} is not unique`);
    }
    // With descriptors, the NIC's queues are those taps (one queue pair per descriptor).
    if (fds.length > 0 && taps.some((tap) => tap === null)) {
      return send(res, 500, 'Error adding device to the VM: Failed creating virtio-net device: a descriptor sent is not a tap');
    }
    if (fds.length > 0 && typeof config.num_queues === 'number' && config.num_queues !== 2 * fds.length) {
      return send(res, 400, `Error parsing JSON body: num_queues ${String(config.num_queues)} does not match the ${fds.length} tap descriptors sent`);
    }
    if (fds.length > 0) keep(id);
    this.nets.push({
      ip: '192.168.249.1',
      mask: '255.255.255.0',
      iommu: false,
      num_queues: 2,
      queue_size: 256,
      vhost_user: false,
      vhost_mode: 'Client',
      offload_tso: true,
      offload_ufo: true,
      offload_csum: true,
      ...(fds.length > 0 ? { num_queues: 2 * fds.length } : {}),
      ...config,
      // cloud-hypervisor prints MACs in lower case.
      ...(typeof config.mac === 'string' ? { mac: config.mac.toLowerCase() } : { mac: '52:54:00:00:00:01' }),
      id,
      bdf: `0000:00:${(this.nextSlot++).toString(16).padStart(2, '0')}.0`,
    });
    if (this.state === 'Created') return send(res, 204);
    const added = this.nets[this.nets.length - 1];
    send(res, 200, JSON.stringify({ id, bdf: added?.bdf }));
  }

  removeDevice({ body }: RequestWithRights, res: ServerResponse): void {
    if (this.state === undefined) return send(res, 404);
    const id = typeof body === 'object' && body !== null ? (body as Json).id : undefined;
    if (typeof id !== 'string') return send(res, 400, 'Error parsing JSON body');
    const index = this.nets.findIndex((net) => net.id === id);
    if (index !== -1) {
      this.nets.splice(index, 1);
      for (const fd of this.tapQueues.get(id) ?? []) closeSync(fd);
      this.tapQueues.delete(id);
    } else if (!this.otherDevices.delete(id)) return send(res, 404, `Error removing device from the VM: no device ${id}`);
    send(res, 204);
  }

  info(res: ServerResponse): void {
    if (this.state === undefined) return send(res, 404);
    const deviceTree: Record<string, Json> = {};
    for (const net of this.nets) {
      const id = String(net.id);
      deviceTree[id] = { id, resources: [], children: [], pci_bdf: net.bdf };
    }
    for (const id of this.otherDevices) deviceTree[id] = { id, resources: [], children: [], pci_bdf: null };
    send(
      res,
      200,
      JSON.stringify({
        config: {
          payload: { kernel: '/fake/vmlinux' },
          net: this.nets.map(({ bdf: _bdf, ...net }) => net),
        },
        state: this.state,
        memory_actual_size: 536870912,
        device_tree: deviceTree,
      }),
    );
  }
}

const text = (body: unknown): boolean => typeof body === 'string';

/** A request's body with the descriptors that came with it; keep(id) hands them to NIC id. */
interface RequestWithRights {
  readonly body: unknown;
  readonly fds: readonly number[];
  readonly taps: readonly (string | null)[];
  readonly keep: (id: string) => void;
}

const ROUTES: Readonly<Record<string, { method: string; run: (fake: FakeCloudHypervisor, request: RequestWithRights, res: ServerResponse) => void }>> = {
  'vm.add-net': { method: 'PUT', run: (fake, request, res) => fake.addNet(request, res) },
  'vm.remove-device': { method: 'PUT', run: (fake, request, res) => fake.removeDevice(request, res) },
  'vm.info': { method: 'GET', run: (fake, _request, res) => fake.info(res) },
};

function send(res: ServerResponse, status: number, body?: string): void {
  if (body === undefined || status === 204) {
    res.writeHead(status).end();
    return;
  }
  res.writeHead(status, { 'Content-Type': status === 200 ? 'application/json' : 'text/plain' }).end(body);
}
