import { mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createKnowledge } from './knowledge.ts';

describe('knowledge', () => {
  it('joins the Markdown files in order and picks up an edit after the check interval', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-knowledge-'));
    writeFileSync(join(dir, 'b-voice.md'), 'Voice: plain English.\n');
    writeFileSync(join(dir, 'a-brand.md'), 'Brand: Mezzofy.\n');
    writeFileSync(join(dir, 'notes.txt'), 'not Markdown');
    let clock = 0;
    const knowledge = createKnowledge(dir, 1_000, () => clock);
    expect(knowledge()).toBe('Brand: Mezzofy.\n\nVoice: plain English.');

    writeFileSync(join(dir, 'a-brand.md'), 'Brand: Mezzofy, vouchers and loyalty.\n');
    utimesSync(join(dir, 'a-brand.md'), new Date(), new Date(Date.now() + 5_000));
    clock = 500;
    expect(knowledge()).toBe('Brand: Mezzofy.\n\nVoice: plain English.');
    clock = 1_500;
    expect(knowledge()).toBe('Brand: Mezzofy, vouchers and loyalty.\n\nVoice: plain English.');
  });

  it('a missing folder is no context, not an error', () => {
    expect(createKnowledge(join(tmpdir(), 'mz-no-such-dir'))()).toBe('');
  });
});
