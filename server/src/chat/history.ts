/**
 * Earlier messages of a session as the model reads them: each stored turn (a user message and
 * the assistant's stored transcript: text, tool calls and results) mapped back to
 * ChatMessage[], fitted to a character budget. The most recent turns are kept whole; older
 * ones are dropped and replaced by a short "Earlier in this conversation:" summary built from
 * their user messages' first lines. (A model-written summary is a later improvement.)
 */
import type { ChatMessage, ContentPart } from '../llm/types.ts';
import type { MessageRow } from './chat.repository.ts';

const SUMMARY_LINE_CHARS = 120;
const SUMMARY_MAX_LINES = 20;

interface Turn {
  messages: ChatMessage[];
  firstLine: string;
  size: number;
}

const text = (t: string): ContentPart => ({ type: 'text', text: t });

function sizeOf(messages: ChatMessage[]): number {
  let n = 0;
  for (const m of messages)
    for (const p of m.content)
      n += p.type === 'text' ? p.text.length : p.type === 'image' ? 0 : JSON.stringify(p).length;
  return n;
}

function assistantMessages(row: MessageRow): ChatMessage[] | null {
  const meta = row.metadata ?? {};
  if (meta.status === 'failed') return null;
  const transcript = meta.transcript;
  if (Array.isArray(transcript) && transcript.length > 0) return transcript as ChatMessage[];
  return row.content ? [{ role: 'assistant', content: [text(row.content)] }] : null;
}

/** Turns of stored rows; a user message without a stored answer is not sent again. */
export function turnsOf(rows: MessageRow[]): Turn[] {
  const turns: Turn[] = [];
  let user: MessageRow | null = null;
  for (const row of rows) {
    if (row.role === 'user') {
      user = row;
      continue;
    }
    if (row.role !== 'assistant') continue;
    if (!user) {
      // The rest of a turn that waited for an approval continues the turn before it.
      const last = turns.at(-1);
      const rest = row.metadata?.continues ? assistantMessages(row) : null;
      if (last && rest) {
        last.messages.push(...rest);
        last.size += sizeOf(rest);
      }
      continue;
    }
    const answer = assistantMessages(row);
    if (answer) {
      const media = user.metadata?.media as { name?: string } | undefined;
      const said = user.content || (media ? `(sent an image: ${media.name ?? 'image'})` : '');
      const messages: ChatMessage[] = [{ role: 'user', content: [text(said)] }, ...answer];
      turns.push({
        messages,
        firstLine: user.content.trim().split('\n')[0] ?? '',
        size: sizeOf(messages),
      });
    }
    user = null;
  }
  return turns;
}

export function buildHistory(rows: MessageRow[], maxChars: number): ChatMessage[] {
  const turns = turnsOf(rows);
  let used = 0;
  let start = turns.length;
  while (start > 0 && used + turns[start - 1]!.size <= maxChars) {
    start -= 1;
    used += turns[start]!.size;
  }
  const kept = turns.slice(start).flatMap((t) => t.messages.map((m) => ({ ...m })));
  if (start === 0) return kept;

  const dropped = turns.slice(0, start);
  const lines = dropped
    .slice(-SUMMARY_MAX_LINES)
    .map((t) =>
      t.firstLine.length > SUMMARY_LINE_CHARS
        ? `- ${t.firstLine.slice(0, SUMMARY_LINE_CHARS)}…`
        : `- ${t.firstLine}`,
    );
  const omitted = dropped.length - lines.length;
  const summary = [
    'Earlier in this conversation: (older messages are not shown; the user asked about)',
    ...(omitted > 0 ? [`- (${omitted} earlier requests)`] : []),
    ...lines,
  ].join('\n');
  // The summary leads the first kept user message, so roles still alternate.
  const first = kept[0];
  if (first?.role === 'user') {
    kept[0] = { role: 'user', content: [text(summary), ...first.content] };
    return kept;
  }
  return [
    { role: 'user', content: [text(summary)] },
    { role: 'assistant', content: [text('Noted.')] },
    ...kept,
  ];
}
