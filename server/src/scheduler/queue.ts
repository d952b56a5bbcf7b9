/**
 * The job queue interface: BullMQ on Redis in production, in-process in the embedded
 * default. A typed registry maps job name → data schema → handler; job data carries ids,
 * never secrets; handlers are idempotent.
 */
import type { z } from 'zod';
import type { Logger } from '../logging/logger.ts';

export interface JobContext {
  log: Logger;
  attempt: number;
  jobId: string;
}

export interface JobDefinition<T = unknown> {
  name: string;
  schema: z.ZodType<T>;
  handler: (data: T, ctx: JobContext) => Promise<unknown>;
  /** Tries in all, the first included. */
  attempts?: number;
  /** First retry delay; doubles each time. */
  backoffMs?: number;
}

export interface EnqueueOptions {
  /** Deterministic id: a second enqueue with the same id while the first is known is a no-op. */
  jobId?: string;
  delayMs?: number;
}

export interface JobQueue {
  readonly engine: 'bullmq' | 'in-process';
  define<T>(definition: JobDefinition<T>): void;
  enqueue(name: string, data: unknown, options?: EnqueueOptions): Promise<string>;
  /** A recurring job (5-field cron, in `timezone`), registered by the scheduler role. */
  schedule(
    schedulerId: string,
    cron: string,
    name: string,
    data: unknown,
    timezone?: string,
  ): Promise<void>;
  startWorker(): Promise<void>;
  startScheduler(): Promise<void>;
  status(): 'ok' | 'down';
  close(): Promise<void>;
}

export class UnknownJobError extends Error {
  override name = 'UnknownJobError';
}
