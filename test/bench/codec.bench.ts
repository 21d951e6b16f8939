import { type ClientId, clientId } from '../../shared/client-id.js';
import { linkAddressesOf, parseAddress } from '../../shared/link-address.js';
import { type BenchResult, measureThroughput } from './measure.js';

// The obvious way to write the codec with string splitting and no validation beyond parseInt:
// the baseline our validated codec is compared with in the same run.
function naiveFromMac(mac: string): { id: number; clientIp: string; clientMac: string; providerMac: string } {
  const octets = mac.split(/[:-]/).map((pair) => parseInt(pair, 16));
  const id = ((octets[4] ?? 0) << 8) | (octets[5] ?? 0);
  return naiveFromId(id);
}

function naiveFromIp(ip: string): ReturnType<typeof naiveFromMac> {
  const parts = ip.split('.').map(Number);
  return naiveFromId(((parts[2] ?? 0) << 8) | (parts[3] ?? 0));
}

function naiveFromId(id: number): ReturnType<typeof naiveFromMac> {
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');
  const tail = `${hex(id >> 8)}:${hex(id & 0xff)}`;
  return { id, clientIp: `100.64.${id >> 8}.${id & 0xff}`, clientMac: `0A:B3:EC:00:${tail}`, providerMac: `0A:B3:EC:80:${tail}` };
}

export function codecBench(): BenchResult[] {
  const ids: ClientId[] = [];
  for (let id = 1; id <= 65534; id += 3) ids.push(clientId(id));
  const macs = ids.map((id) => linkAddressesOf(id).clientMac);
  const ips = ids.map((id) => linkAddressesOf(id).clientIp);
  const texts = ids.map(String);
  const roundTrip = (text: string) => linkAddressesOf(parseAddress(text).id);
  return [
    measureThroughput('codec', 'MAC -> all forms (spectrum-net)', macs, roundTrip),
    measureThroughput('codec', 'MAC -> all forms (naive split)', macs, naiveFromMac),
    measureThroughput('codec', 'IPv4 -> all forms (spectrum-net)', ips, roundTrip),
    measureThroughput('codec', 'IPv4 -> all forms (naive split)', ips, naiveFromIp),
    measureThroughput('codec', 'id -> all forms (spectrum-net)', texts, roundTrip),
    measureThroughput('codec', 'id -> all forms (naive)', texts, (text) => naiveFromId(Number(text))),
  ];
}
