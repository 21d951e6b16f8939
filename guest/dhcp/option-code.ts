/** DHCP option codes this server reads or writes (RFC 2132 unless noted). */
export const OPTION = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  dnsServers: 6,
  hostname: 12,
  requestedIp: 50,
  leaseTime: 51,
  overload: 52,
  messageType: 53,
  serverId: 54,
  parameterRequestList: 55,
  message: 56,
  maxMessageSize: 57,
  renewalTime: 58,
  rebindingTime: 59,
  clientIdentifier: 61,
  classlessRoutes: 121, // RFC 3442
  end: 255,
} as const;

/** Option 53 values (RFC 2132 9.6). */
export const MESSAGE_TYPE = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;

export type MessageTypeName = keyof typeof MESSAGE_TYPE;

const NAMES = new Map<number, MessageTypeName>(
  (Object.entries(MESSAGE_TYPE) as [MessageTypeName, number][]).map(([name, code]) => [code, name]),
);

export function messageTypeName(code: number): MessageTypeName | undefined {
  return NAMES.get(code);
}

/** Option 52 values: which of the fixed fields carry options (RFC 2132 9.3). */
export const OVERLOAD = { file: 1, sname: 2, both: 3 } as const;
