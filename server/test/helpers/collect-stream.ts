/**
 * Drains an async iterable for a test: every item it yielded, and the error it ended with
 * (undefined when it finished cleanly), so a test can assert both.
 */
export async function collectStream<T>(
  iterable: AsyncIterable<T>,
  onItem?: (item: T, index: number) => void,
): Promise<{ events: T[]; error: unknown }> {
  const events: T[] = [];
  try {
    for await (const item of iterable) {
      events.push(item);
      onItem?.(item, events.length - 1);
    }
    return { events, error: undefined };
  } catch (error) {
    return { events, error };
  }
}
