/**
 * The explicit allow-list of routes that need no token. Everything else must declare a
 * permission in its route config, or the app refuses to start.
 */
export const PUBLIC_ROUTES: ReadonlyArray<string> = [
  'GET /health',
  'POST /auth/login',
  'POST /auth/refresh',
  // The WebSocket authenticates itself: its first frame is hello { token } (realtime/ws-gateway.ts).
  'GET /chat/ws',
];

/** Prefixes served without a token: the API docs. */
export const PUBLIC_PREFIXES: ReadonlyArray<string> = ['/docs'];

export function isPublicRoute(method: string, url: string): boolean {
  if (PUBLIC_ROUTES.includes(`${method} ${url}`)) return true;
  return PUBLIC_PREFIXES.some((p) => url === p || url.startsWith(`${p}/`));
}
