/** `GET /chat/ws`: chat over the WebSocket (realtime/ws-gateway.ts, protocol/src/ws.ts). */
import type { FastifyPluginAsync } from 'fastify';
import type { WsGateway } from '../realtime/ws-gateway.ts';

export function wsRoutes(gateway: WsGateway): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/chat/ws',
      {
        websocket: true,
        // Public: the socket authenticates itself with its first frame (hello { token }).
        // Not counted by the HTTP rate limiter; the socket has its own message budget.
        config: { rateLimit: false },
      },
      (socket, request) => {
        const ua = request.headers['user-agent'];
        gateway.accept(socket, request.ip, typeof ua === 'string' ? ua : null);
      },
    );
  };
}
