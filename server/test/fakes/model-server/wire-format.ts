/** The shape each API's writer for the fake model server implements. */
import type {
  FakeApi,
  FakeErrorType,
  FakeHttpError,
  FakeReply,
  NormalisedReply,
  WirePlan,
} from './reply.ts';

export interface WireRequest {
  model: string;
  stream: boolean;
  /** OpenAI: `stream_options.include_usage` was set. */
  includeUsage: boolean;
}

export interface WireFormat {
  readonly api: FakeApi;
  /** An HTTP error in the API's JSON error shape. */
  errorResponse(error: FakeHttpError): WirePlan;
  /** A complete answer: a JSON body, or an SSE stream when the request asked for one. */
  success(reply: NormalisedReply, request: WireRequest): WirePlan;
  /** The frame that reports an error in the middle of a stream. */
  midStreamError(type: FakeErrorType, message: string): string;
  /** A 200 answer the client cannot use. */
  malformed(
    kind: NonNullable<FakeReply['malformed']>,
    reply: NormalisedReply,
    request: WireRequest,
  ): WirePlan;
}
