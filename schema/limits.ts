/** Documented list bounds; they appear in the schema's descriptions. */
export const MAX_IDS = 1000;
export const MAX_PAGE_SIZE = 500;
export const DEFAULT_PAGE_SIZE = 20;
