// The one limit of a Unix socket path both the host tools and the agent check before connecting
// or binding: Node binds a longer path truncated, and connects to the truncated one as well.

/** Longest Unix socket path, in bytes: sun_path holds 108 with the terminating NUL. */
export const UNIX_SOCKET_PATH_MAX = 107;
