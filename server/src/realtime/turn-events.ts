/** How a turn's agent events appear on the WebSocket (the socket's own turns and resumed ones). */
import type { WsServerEventBody } from '@mezzofy/protocol';
import type { AgentEvent } from '../agents/agent.ts';

/** The WebSocket events one agent event becomes. */
export function eventsOf(requestId: string, event: AgentEvent): WsServerEventBody[] {
  switch (event.type) {
    case 'status':
      return [{ type: 'status', request_id: requestId, text: event.text }];
    case 'model-start':
      return [
        {
          type: 'model.start',
          request_id: requestId,
          provider: event.provider,
          model: event.model,
          fallback_reason: event.fallback_reason,
        },
      ];
    case 'text-delta':
      return [{ type: 'text.delta', request_id: requestId, text: event.text }];
    case 'tool-call-start':
      return [
        {
          type: 'tool.call-start',
          request_id: requestId,
          id: event.id,
          name: event.name,
          input: event.input,
        },
      ];
    case 'tool-call-end': {
      const end: WsServerEventBody = {
        type: 'tool.call-end',
        request_id: requestId,
        id: event.id,
        name: event.name,
        status: event.status,
        ...(event.approval_id ? { approval_id: event.approval_id } : {}),
      };
      if (event.status !== 'pending_approval' || !event.approval_id) return [end];
      return [
        end,
        {
          type: 'approval.requested',
          request_id: requestId,
          approval_id: event.approval_id,
          tool: event.name,
          summary: `${event.name} is waiting for your approval`,
        },
      ];
    }
    case 'artifact-created':
      return [
        {
          type: 'artifact.created',
          request_id: requestId,
          tool_call_id: event.tool_call_id,
          artifact: event.artifact,
        },
      ];
    // message.end is sent with the stored reply (message id, usage, tool calls) once saved.
    case 'message-end':
      return [];
  }
}
