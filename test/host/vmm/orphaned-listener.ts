// A listening socket like one handed to cloud-hypervisor with `--api-socket fd=`: made by a
// launcher that then exits, served by its child. SO_PEERCRED on a connection to it names the
// launcher, gone.
import { spawn } from 'node:child_process';

/**
 * python3 SOCKET: listens at SOCKET, prints its pid, forks and exits; the child answers one
 * request 204 (cloud-hypervisor's answer for a created VM) and exits, within 10 s either way, or
 * when its client leaves without a request.
 */
const ORPHANED_LISTENER = `
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
s.settimeout(10)  # the child never outlives a failed test by long
print(os.getpid(), flush=True)
if os.fork() != 0:
    os._exit(0)
c, _ = s.accept()
c.settimeout(10)
def more(data):
    chunk = c.recv(65536)
    if not chunk:  # the client left without a (whole) request
        os._exit(0)
    return data + chunk
data = b''
while b'\\r\\n\\r\\n' not in data:
    data = more(data)
head, body = data.split(b'\\r\\n\\r\\n', 1)
length = [int(l.split(b':')[1]) for l in head.split(b'\\r\\n') if l.lower().startswith(b'content-length:')]
while len(body) < (length[0] if length else 0):
    body = more(body)
c.sendall(b'HTTP/1.1 204 No Content\\r\\nConnection: close\\r\\n\\r\\n')
c.close()
`;

/** Makes an orphaned listener at `socketPath`; resolves with the launcher's pid once it has exited (and been reaped). */
export async function orphanedListener(socketPath: string): Promise<number> {
  const launcher = spawn('python3', ['-c', ORPHANED_LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => launcher.once('exit', resolve));
  const printed = await new Promise<string>((resolve, reject) => {
    launcher.stdout.once('data', (data: Buffer) => resolve(data.toString()));
    launcher.once('error', reject);
  });
  const pid = Number(printed.trim());
  if (pid !== launcher.pid) throw new Error(`the launcher said pid ${printed.trim()}, not ${String(launcher.pid)}`);
  await exited;
  return pid;
}
