/**
 * linkedin_prospecting: needs a web browser and a LinkedIn/CRM connector, which a later issue adds. Until then it
 * answers capability_unavailable and never produces stand-in output.
 */

import type { SkillRun } from '../skill.ts';
import { capabilityUnavailable } from '../skill-registry.ts';

export const run: SkillRun = async () => {
  throw capabilityUnavailable('linkedin_prospecting', 'a web browser and a LinkedIn/CRM connector');
};
