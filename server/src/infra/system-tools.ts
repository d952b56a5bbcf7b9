/** Which optional system binaries are installed (OCR, media, browser, office, speech). */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const OPTIONAL_TOOLS = {
  tesseract: ['tesseract'],
  ffmpeg: ['ffmpeg'],
  ffprobe: ['ffprobe'],
  chromium: ['chromium', 'chromium-browser', 'google-chrome'],
  libreoffice: ['libreoffice', 'soffice'],
  pdftoppm: ['pdftoppm'],
  espeak_ng: ['espeak-ng'],
} as const;

export type ToolName = keyof typeof OPTIONAL_TOOLS;

export function findExecutable(
  names: readonly string[],
  pathEnv = process.env.PATH ?? '',
): string | undefined {
  for (const dir of pathEnv.split(delimiter).filter(Boolean)) {
    for (const name of names) {
      const candidate = join(dir, name);
      try {
        accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {}
    }
  }
  return undefined;
}

/** Looked up once at start; /health reports the result. */
export function detectSystemTools(pathEnv?: string): Record<ToolName, boolean> {
  const out = {} as Record<ToolName, boolean>;
  for (const [tool, names] of Object.entries(OPTIONAL_TOOLS))
    out[tool as ToolName] = Boolean(findExecutable(names, pathEnv));
  return out;
}
