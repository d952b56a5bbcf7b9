/** Repositories take either the database or an open transaction, so a service can group writes. */
import type { Kysely, Transaction } from 'kysely';
import type { DB } from './schema.ts';

export type Executor = Kysely<DB> | Transaction<DB>;
