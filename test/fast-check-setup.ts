// Every vitest worker runs this first (vitest.config.ts setupFiles). fast-check 4 sizes an
// arbitrary with a maxLength but no `size` as 'small', about ten elements whatever the bound:
// DHCP option values never grew past ten bytes, nor pending-table or link-state operation lists
// past ten steps. 'medium' reaches about a hundred (raising it found two wrong test bounds in the
// DHCP properties) at a few seconds more for the whole suite; properties that need their full
// bound still ask for `size: 'max'`.
import fc from 'fast-check';

fc.configureGlobal({ baseSize: 'medium' });
