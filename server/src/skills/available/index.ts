/** The implementation of every skill manifest in this folder, by skill name. */
import type { SkillRun } from '../skill.ts';
import { run as contentGeneration } from './content_generation.ts';
import { run as dataAnalysis } from './data_analysis.ts';
import { run as emailOutreach } from './email_outreach.ts';
import { run as financialReporting } from './financial_reporting.ts';
import { run as linkedinProspecting } from './linkedin_prospecting.ts';
import { run as pitchDeckGeneration } from './pitch_deck_generation.ts';
import { run as webResearch } from './web_research.ts';

export const SKILL_IMPLEMENTATIONS: Readonly<Record<string, SkillRun>> = {
  content_generation: contentGeneration,
  data_analysis: dataAnalysis,
  email_outreach: emailOutreach,
  financial_reporting: financialReporting,
  linkedin_prospecting: linkedinProspecting,
  pitch_deck_generation: pitchDeckGeneration,
  web_research: webResearch,
};
