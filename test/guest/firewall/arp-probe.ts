/** Python: the opening of a script that sends ARP from eth0 of its namespace (`s`, its socket; `mac`, eth0's address). */
export const ARP_SOCKET = `import json, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(('eth0', 0))
mac = bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':', ''))
`;

/**
 * Python: the end of such a script: prints, as a sorted JSON array, an address of each ARP reply
 * that comes within half a second: its sender address (`'sender'`, the address asked for) or its
 * target address (`'target'`, the sender address of the request answered).
 */
export function arpAnswers(address: 'sender' | 'target'): string {
  // In the frame: 14 bytes of Ethernet header, then ARP's 8, its sender (6 + 4) and target (6 + 4).
  const at = address === 'sender' ? 28 : 38;
  return `answered = set()
s.settimeout(0.1)
deadline = time.monotonic() + 0.5
while time.monotonic() < deadline:
    try:
        frame = s.recv(128)
    except socket.timeout:
        continue
    if struct.unpack('>H', frame[20:22])[0] == 2:
        answered.add(socket.inet_ntoa(frame[${at}:${at + 4}]))
print(json.dumps(sorted(answered)))
`;
}

/** arpAnswers('target'): the sender addresses of the requests answered. */
export const ARP_ANSWERS = arpAnswers('target');

/**
 * A Python script that sends ARP from eth0 of the namespace it runs in, as a hostile client would:
 * `python3 -c ARP_PROBE PROVIDER_MAC OWN_IP FORGED_IP...`. For each forged sender address: a
 * gratuitous request (from another hardware address), a gratuitous reply, an unsolicited reply to
 * the provider's MAC and a request for the gateway, four packets; then a request for the gateway
 * from OWN_IP and an RFC 5227 probe (sender 0.0.0.0). Prints, as a sorted JSON array, the sender
 * addresses of the requests answered within half a second (each reply's target address).
 */
export const ARP_PROBE = `
${ARP_SOCKET}provider = bytes.fromhex(sys.argv[1].replace(':', ''))
def arp(op, sha, spa, tha, tpa, dst=b'\\xff' * 6):
    s.send(dst + mac + b'\\x08\\x06' + struct.pack('>HHBBH', 1, 0x0800, 6, 4, op) + sha + socket.inet_aton(spa) + tha + socket.inet_aton(tpa))
for index, sender in enumerate(sys.argv[3:]):
    arp(1, bytes([2, 0, 0, 0, 1, index]), sender, bytes(6), sender)
    arp(2, mac, sender, mac, sender)
    arp(2, mac, sender, provider, '169.254.0.1', provider)
    arp(1, mac, sender, bytes(6), '169.254.0.1')
arp(1, mac, sys.argv[2], bytes(6), '169.254.0.1')
arp(1, mac, '0.0.0.0', bytes(6), '169.254.0.1')
${ARP_ANSWERS}`;

/** Packets ARP_PROBE sends per forged sender. */
export const ARP_PROBE_PACKETS_PER_SENDER = 4;
