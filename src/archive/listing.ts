/** Items a message lists at most: a layout of 1600 images made an error of 18 KB. */
const LISTED = 10;

/** The items for a message, the first ten and how many more `where` (the file that lists them all) holds. */
export function listSome(items: readonly string[], where: string): string {
  if (items.length <= LISTED) return items.join(', ');
  return `${items.slice(0, LISTED).join(', ')} and ${items.length - LISTED} more (${where} lists them all)`;
}
