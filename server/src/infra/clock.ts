/** Time source passed into services so tests can move it. */
export type Clock = () => Date;
export const systemClock: Clock = () => new Date();
