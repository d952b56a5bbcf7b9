/**
 * financial_reporting: needs a connection to the accounting ledger and a document renderer (PDF/XLSX), which a later issue adds. Until then it
 * answers capability_unavailable and never produces stand-in output.
 */

import type { SkillRun } from '../skill.ts';
import { capabilityUnavailable } from '../skill-registry.ts';

export const run: SkillRun = async () => {
  throw capabilityUnavailable(
    'financial_reporting',
    'a connection to the accounting ledger and a document renderer (PDF/XLSX)',
  );
};
