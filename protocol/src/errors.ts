/**
 * The closed list of error codes every 4xx/5xx answer carries, and the one error envelope.
 * Clients switch on `code`; `message` is for people.
 */
import { z } from 'zod';

export const ERROR_CODES = [
  'bad_request',
  'validation_failed',
  'invalid_json',
  'unauthorized',
  'token_expired',
  'invalid_credentials',
  'account_locked',
  'account_inactive',
  'forbidden',
  'not_found',
  'method_not_allowed',
  'conflict',
  'weak_password',
  'last_admin',
  'payload_too_large',
  'unsupported_media_type',
  'rate_limited',
  'internal_error',
  'service_unavailable',
  'llm_not_configured',
  'llm_unavailable',
  'budget_exceeded',
  'agent_forbidden',
  'unknown_agent',
  'unknown_skill',
  'capability_unavailable',
  'approval_expired',
] as const;

export const ErrorCode = z.enum(ERROR_CODES);
export type ErrorCode = z.infer<typeof ErrorCode>;

export const ErrorEnvelope = z
  .object({
    error: z.object({
      code: ErrorCode,
      message: z.string(),
      details: z.unknown().optional(),
      request_id: z.string(),
    }),
  })
  .meta({ id: 'ErrorEnvelope' });
export type ErrorEnvelope = z.infer<typeof ErrorEnvelope>;

/** The HTTP status that goes with each code, so the server and clients agree. */
export const ERROR_STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  validation_failed: 400,
  invalid_json: 400,
  unauthorized: 401,
  token_expired: 401,
  invalid_credentials: 401,
  account_locked: 429,
  account_inactive: 403,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  weak_password: 400,
  last_admin: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal_error: 500,
  service_unavailable: 503,
  /** No model is configured for the purpose; the message names the env var to set. */
  llm_not_configured: 503,
  /** Every configured model failed, refused our request, or broke off mid-answer. */
  llm_unavailable: 503,
  /**
   * The department's monthly AI budget is spent and its policy is to refuse. 402, not 429:
   * waiting a few seconds does not help, and clients must not auto-retry it.
   */
  budget_exceeded: 402,
  /** The routed or named agent is one the caller's role may not reach (agent:<name>). */
  agent_forbidden: 403,
  /** No agent of that name exists. */
  unknown_agent: 400,
  /** No skill of that name exists. */
  unknown_skill: 400,
  /**
   * The feature needs a capability this server does not have yet (web browser, document
   * renderer, CRM/LinkedIn connector). 501: retrying does not help until it is installed.
   */
  capability_unavailable: 501,
  /** The pending action passed its expiry before anyone decided; ask again for a new one. */
  approval_expired: 409,
};
