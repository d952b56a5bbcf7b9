/**
 * web_research: needs a web browser (search and page reading), which a later issue adds. Until then it
 * answers capability_unavailable and never produces stand-in output.
 */

import type { SkillRun } from '../skill.ts';
import { capabilityUnavailable } from '../skill-registry.ts';

export const run: SkillRun = async () => {
  throw capabilityUnavailable('web_research', 'a web browser (search and page reading)');
};
