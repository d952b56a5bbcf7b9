import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { AuditEntry } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import type { PendingActionRow } from '../db/schema.ts';
import type { ParkRequest } from './approvals/approvals.service.ts';
import { type ToolContext, withArtifacts } from './tool.ts';
import { createToolExecutor, type ToolExecutorDeps } from './tool-executor.ts';
import { type AnyTool, createToolRegistry, defineTool } from './tool-registry.ts';
import { capText } from './tool-runner.ts';

const log = pino({ level: 'silent' });

function principal(permissions: string[], role = 'sales_rep'): Principal {
  return {
    id: '00000000-0000-4000-8000-000000000001',
    email: 'rep@mezzofy.test',
    name: 'Rep',
    role,
    department: 'sales',
    permissions: new Set(permissions),
    sessionId: '00000000-0000-4000-8000-000000000002',
    timezone: 'Asia/Singapore',
    locale: 'en',
  };
}

function ctx(permissions: string[], signal = new AbortController().signal): ToolContext {
  return { principal: principal(permissions), sessionId: null, source: 'api', signal, log };
}

const echo = defineTool({
  name: 'echo',
  description: 'Echoes its input.',
  inputSchema: z.strictObject({
    text: z.string().min(1).describe('Text'),
    n: z.number().default(1),
  }),
  effect: 'read',
  permission: 'crm:read',
  async execute(input) {
    return input;
  },
});

function setup(
  tools: AnyTool[],
  options: Partial<ToolExecutorDeps['limits']> & {
    current?: string[];
  } = {},
) {
  const audits: AuditEntry[] = [];
  const parked: ParkRequest[] = [];
  const auto: ParkRequest[] = [];
  const executor = createToolExecutor({
    registry: createToolRegistry(tools),
    approvals: {
      async park(request) {
        parked.push(request);
        return { id: `approval-${parked.length}` } as PendingActionRow;
      },
      async runAutoApproved(request) {
        auto.push(request);
        return {
          row: { id: 'auto-1' } as PendingActionRow,
          outcome: { status: 'ok', output: 'sent' },
        };
      },
    },
    limits: {
      timeoutMs: options.timeoutMs ?? 1_000,
      resultMaxBytes: options.resultMaxBytes ?? 16_384,
      autoApproveRoles: options.autoApproveRoles ?? [],
    },
    audit: async (entry) => {
      audits.push(entry);
    },
    ...(options.current
      ? { currentPermissions: async () => new Set(options.current) as ReadonlySet<string> }
      : {}),
  });
  return { executor, audits, parked, auto };
}

const call = (name: string, input: Record<string, unknown>) => ({ id: 'call-1', name, input });

describe('tool registry', () => {
  it('turns the zod input schema into a plain object JSON Schema for the model', () => {
    const registry = createToolRegistry([echo]);
    const spec = registry.spec('echo');
    expect(spec.name).toBe('echo');
    expect(spec.inputSchema.type).toBe('object');
    expect(spec.inputSchema.$schema).toBeUndefined();
    expect(spec.inputSchema.required).toEqual(['text']);
    expect(spec.inputSchema.additionalProperties).toBe(false);
    expect(() => registry.spec('nope')).toThrow(/unknown tool/);
  });

  it('refuses duplicate names, non-snake_case names and non-object schemas', () => {
    expect(() => createToolRegistry([echo, echo])).toThrow(/twice/);
    expect(() => createToolRegistry([{ ...echo, name: 'Echo-Tool' }])).toThrow(/snake_case/);
    expect(() => createToolRegistry([{ ...echo, name: 'str', inputSchema: z.string() }])).toThrow(
      /object schema/,
    );
  });
});

describe('tool executor', () => {
  it('refuses an unknown tool and a tool the agent does not offer, as readable errors', async () => {
    const { executor, audits } = setup([echo]);
    const unknown = await executor.execute(call('drop_tables', {}), ctx(['crm:read']), ['echo']);
    expect(unknown).toMatchObject({ status: 'error' });
    expect(unknown.output).toMatch(/no tool named "drop_tables".*echo/);
    const notAllowed = await executor.execute(call('echo', { text: 'x' }), ctx(['crm:read']), []);
    expect(notAllowed.status).toBe('error');
    expect(audits.map((a) => a.details?.reason)).toEqual(['unknown_tool', 'not_allowed']);
    expect(audits.every((a) => a.action === 'tool.call' && a.details?.status === 'error')).toBe(
      true,
    );
  });

  it('answers invalid arguments with the readable issues and does not run the tool', async () => {
    let ran = false;
    const tool = {
      ...echo,
      execute: async () => {
        ran = true;
        return 'x';
      },
    };
    const { executor } = setup([tool]);
    const out = await executor.execute(call('echo', { text: '', extra: 1 }), ctx(['crm:read']), [
      'echo',
    ]);
    expect(out.status).toBe('error');
    expect(out.output).toMatch(/arguments for echo are not valid/);
    expect(out.output).toMatch(/- text: /);
    expect(out.output).toMatch(/extra/);
    expect(ran).toBe(false);
  });

  it('checks the permission at execution time, including a role changed since the turn began', async () => {
    const { executor, audits } = setup([echo]);
    const out = await executor.execute(call('echo', { text: 'x' }), ctx(['chat:use']), ['echo']);
    expect(out).toEqual({
      status: 'error',
      output: expect.stringMatching(/you may not use echo.*crm:read/),
    });
    expect(audits[0]!.details).toMatchObject({ status: 'error', reason: 'forbidden' });

    // The principal was built when the turn began; the role has lost crm:read since.
    const revoked = setup([echo], { current: ['chat:use'] });
    const late = await revoked.executor.execute(call('echo', { text: 'x' }), ctx(['crm:read']), [
      'echo',
    ]);
    expect(late.status).toBe('error');
    expect(late.output).toMatch(/you may not use echo/);
  });

  it('runs a read tool, returns JSON text and audits the call with the argument hash', async () => {
    const { executor, audits } = setup([echo]);
    const out = await executor.execute(call('echo', { n: 2, text: 'hi' }), ctx(['crm:read']), [
      'echo',
    ]);
    expect(out).toEqual({ status: 'ok', output: '{"text":"hi","n":2}' });
    expect(audits).toHaveLength(1);
    expect(audits[0]).toMatchObject({
      userId: principal([]).id,
      department: 'sales',
      action: 'tool.call',
      source: 'api',
      details: { tool: 'echo', effect: 'read', status: 'ok', args_summary: '{"n":2,"text":"hi"}' },
    });
    expect(audits[0]!.details!.args_sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('passes on the files a tool made (withArtifacts); the model reads only the data', async () => {
    const file = { id: 'f1', name: 'leads.csv', type: 'csv', size_bytes: 42 };
    const exporter = defineTool({
      name: 'export_leads',
      description: 'Exports leads.',
      inputSchema: z.strictObject({}),
      effect: 'read',
      permission: 'crm:read',
      async execute() {
        return withArtifacts({ rows: 2 }, [file]);
      },
    });
    const { executor } = setup([exporter]);
    const out = await executor.execute(call('export_leads', {}), ctx(['crm:read']), [
      'export_leads',
    ]);
    expect(out).toEqual({ status: 'ok', output: '{"rows":2}', artifacts: [file] });
  });

  it('stops a tool at its time limit: error outcome, and the tool sees its signal abort', async () => {
    let seen: AbortSignal | undefined;
    const slow = defineTool({
      ...echo,
      name: 'slow',
      timeoutMs: 50,
      async execute(_input, c) {
        seen = c.signal;
        await new Promise((r) => setTimeout(r, 5_000));
        return 'late';
      },
    });
    const { executor, audits } = setup([slow]);
    const started = Date.now();
    const out = await executor.execute(call('slow', { text: 'x' }), ctx(['crm:read']), ['slow']);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(out.status).toBe('error');
    expect(out.output).toMatch(/slow timed out after 0.1 s|slow timed out after 0.05 s|timed out/);
    expect(seen?.aborted).toBe(true);
    expect(audits[0]!.details).toMatchObject({ status: 'error' });
  });

  it('uses the configured default time limit and stops on the caller cancelling', async () => {
    const hang = defineTool({
      ...echo,
      name: 'hang',
      execute: (_input, c) =>
        new Promise((_, reject) =>
          c.signal.addEventListener('abort', () => reject(c.signal.reason)),
        ),
    });
    const { executor } = setup([hang], { timeoutMs: 30 });
    expect(
      (await executor.execute(call('hang', { text: 'x' }), ctx(['crm:read']), ['hang'])).output,
    ).toMatch(/timed out/);
    const controller = new AbortController();
    const pending = executor.execute(
      call('hang', { text: 'x' }),
      ctx(['crm:read'], controller.signal),
      ['hang'],
    );
    controller.abort();
    expect((await pending).output).toMatch(/cancelled/);
  });

  it('caps a large result with a truncation marker', async () => {
    const big = defineTool({ ...echo, name: 'big', execute: async () => 'é'.repeat(10_000) });
    const { executor } = setup([big], { resultMaxBytes: 1_000 });
    const out = await executor.execute(call('big', { text: 'x' }), ctx(['crm:read']), ['big']);
    expect(out.status).toBe('ok');
    expect(Buffer.byteLength(out.output)).toBeLessThanOrEqual(1_000);
    expect(out.output).toMatch(/truncated: the result was 20000 bytes/);
    expect(out.output).not.toContain('\uFFFD');
    expect(capText('short', 1_000)).toBe('short');
  });

  it('turns a thrown error into a readable message without stack or secrets', async () => {
    const failing = defineTool({
      ...echo,
      name: 'failing',
      async execute() {
        throw new Error(
          'upstream said no: Authorization: Bearer abcdefghijklmnop123 password=hunter2\n    at secret (/srv/x.ts:1:1)',
        );
      },
    });
    const { executor } = setup([failing]);
    const out = await executor.execute(call('failing', { text: 'x' }), ctx(['crm:read']), [
      'failing',
    ]);
    expect(out.status).toBe('error');
    expect(out.output).toMatch(/^failing failed: upstream said no/);
    expect(out.output).not.toMatch(/abcdefghijklmnop123|hunter2|\/srv\/x\.ts|at secret/);
  });

  it('parks an external tool: pending approval with canonical arguments, the tool never runs', async () => {
    let ran = false;
    const mail = defineTool({
      name: 'send_mail',
      description: 'Sends mail.',
      inputSchema: z.strictObject({ to: z.array(z.email()), subject: z.string() }),
      effect: 'external',
      permission: 'mail:send',
      async execute() {
        ran = true;
        return 'sent';
      },
    });
    const { executor, parked, auto } = setup([mail]);
    const out = await executor.execute(
      call('send_mail', { subject: 'Hi', to: ['a@b.test'] }),
      ctx(['mail:send']),
      ['send_mail'],
    );
    expect(out).toMatchObject({ status: 'pending_approval', approvalId: 'approval-1' });
    expect(out.output).toMatch(/waiting for the user's approval/);
    expect(out.output).toMatch(/Do not retry/);
    expect(ran).toBe(false);
    expect(auto).toHaveLength(0);
    expect(parked[0]!.canonicalArguments).toEqual({ subject: 'Hi', to: ['a@b.test'] });
    expect(parked[0]!.argumentsSha256).toMatch(/^[0-9a-f]{64}$/);

    // An auto-approved role runs at once through the approvals service.
    const autoSetup = setup([mail], { autoApproveRoles: ['sales_rep'] });
    const done = await autoSetup.executor.execute(
      call('send_mail', { subject: 'Hi', to: ['a@b.test'] }),
      ctx(['mail:send']),
      ['send_mail'],
    );
    expect(done).toEqual({ status: 'ok', output: 'sent' });
    expect(autoSetup.parked).toHaveLength(0);
    expect(autoSetup.auto).toHaveLength(1);
  });
});
