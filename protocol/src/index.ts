/** The wire contract shared by the server and the app. */
export * from './admin.ts';
export * from './agents.ts';
export * from './approvals.ts';
export * from './auth.ts';
export * from './chat.ts';
export * from './common.ts';
export * from './errors.ts';
export * from './health.ts';
export * from './usage.ts';
export * from './ws.ts';
