// Types for raw-socket 1.8 (no published typings): the parts spectrum-net uses.
declare module 'raw-socket' {
  import type { EventEmitter } from 'node:events';

  export const AddressFamily: { readonly IPv4: number; readonly IPv6: number };
  export const Protocol: { readonly None: number; readonly ICMP: number; readonly TCP: number; readonly UDP: number; readonly ICMPv6: number };
  export const SocketLevel: { readonly SOL_SOCKET: number; readonly IPPROTO_IP: number; readonly IPPROTO_IPV6: number };
  export const SocketOption: {
    readonly SO_BROADCAST: number;
    readonly SO_RCVBUF: number;
    readonly SO_SNDBUF: number;
    readonly SO_BINDTODEVICE: number;
    readonly IP_HDRINCL: number;
    readonly IP_TTL: number;
  };

  export interface SocketOptions {
    readonly protocol?: number;
    readonly addressFamily?: number;
    readonly bufferSize?: number;
  }

  export class Socket extends EventEmitter {
    /** The receive buffer; each 'message' is a view of it, valid until the next receive. */
    buffer: Buffer;
    close(): this;
    setOption(level: number, option: number, value: number): void;
    setOption(level: number, option: number, value: Buffer, length: number): void;
    send(
      buffer: Buffer,
      offset: number,
      length: number,
      address: string,
      afterCallback: (error: Error | null, bytes: number) => void,
    ): this;
    pauseRecv(): this;
    resumeRecv(): this;
    on(event: 'message', listener: (buffer: Buffer, source: string) => void): this;
    on(event: 'error', listener: (error: Error) => void): this;
    on(event: 'close', listener: () => void): this;
  }

  export function createSocket(options?: SocketOptions): Socket;
}
