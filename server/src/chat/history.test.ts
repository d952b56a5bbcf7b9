import { describe, expect, it } from 'vitest';
import type { MessageRow } from './chat.repository.ts';
import { buildHistory } from './history.ts';

let n = 0;
const row = (
  role: string,
  content: string,
  metadata: Record<string, unknown> = {},
): MessageRow => ({
  id: `id-${++n}`,
  role,
  content,
  metadata,
  client_message_id: null,
  created_at: new Date(),
});

describe('buildHistory', () => {
  it('maps turns back to messages, with the stored tool transcript', () => {
    const transcript = [
      {
        role: 'assistant',
        content: [{ type: 'tool-call', id: 't1', name: 'search_leads', input: {} }],
      },
      {
        role: 'tool',
        content: [{ type: 'tool-result', id: 't1', name: 'search_leads', output: '[]' }],
      },
      { role: 'assistant', content: [{ type: 'text', text: 'No leads.' }] },
    ];
    const history = buildHistory(
      [row('user', 'Any leads?'), row('assistant', 'No leads.', { transcript })],
      10_000,
    );
    expect(history).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Any leads?' }] },
      ...transcript,
    ]);
  });

  it('leaves out turns whose answer failed', () => {
    const history = buildHistory(
      [
        row('user', 'lost'),
        row('assistant', '', { status: 'failed', error: 'llm_unavailable' }),
        row('user', 'kept'),
        row('assistant', 'yes'),
      ],
      10_000,
    );
    expect(history.map((m) => m.role)).toEqual(['user', 'assistant']);
    expect(JSON.stringify(history)).not.toContain('lost');
  });

  it('keeps the newest turns whole and summarises the dropped ones', () => {
    const rows: MessageRow[] = [];
    for (let i = 1; i <= 5; i++)
      rows.push(
        row('user', `question ${i}\nmore detail ${'x'.repeat(100)}`),
        row('assistant', 'a'.repeat(200)),
      );
    const history = buildHistory(rows, 700);
    // Each turn is ~322 chars: two fit.
    expect(history).toHaveLength(4);
    const first = history[0]!;
    expect(first.role).toBe('user');
    const summary = first.content[0]!;
    expect(summary).toMatchObject({ type: 'text' });
    const text = (summary as { text: string }).text;
    expect(text).toContain('Earlier in this conversation:');
    expect(text).toContain('- question 1');
    expect(text).toContain('- question 3');
    expect(text).not.toContain('question 4');
    expect(text).not.toContain('more detail');
    expect(JSON.stringify(first.content[1])).toContain('question 4');
    expect(JSON.stringify(history[2])).toContain('question 5');
  });

  it('is empty without earlier turns', () => {
    expect(buildHistory([], 1000)).toEqual([]);
  });
});
