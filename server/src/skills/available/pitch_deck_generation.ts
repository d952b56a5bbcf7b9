/**
 * pitch_deck_generation: needs a document renderer for PowerPoint (PPTX) files, which a later issue adds. Until then it
 * answers capability_unavailable and never produces stand-in output.
 */

import type { SkillRun } from '../skill.ts';
import { capabilityUnavailable } from '../skill-registry.ts';

export const run: SkillRun = async () => {
  throw capabilityUnavailable(
    'pitch_deck_generation',
    'a document renderer for PowerPoint (PPTX) files',
  );
};
