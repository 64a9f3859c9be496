/**
 * The lock, enrollment and quit pages take typed input only. A clipboard (or the X
 * primary selection, pasted by the middle button) may hold a chart excerpt or someone
 * else's PIN: pasting or dropping it into a field could put PHI on the lock screen or
 * into the audit log. So paste, drop and middle-click paste insert nothing.
 */

/** `InputEvent.inputType`s that insert what another program put somewhere. */
export const FOREIGN_INPUT_TYPES: ReadonlySet<string> = new Set([
  "insertFromPaste",
  "insertFromPasteAsQuotation",
  "insertFromDrop",
  "insertFromYank",
]);

const MIDDLE_BUTTON = 1;

/** Refuses paste, drop and middle-click paste anywhere under `target` (capturing first). */
export function refuseForeignInput(target: EventTarget): void {
  const refuse = (event: Event): void => event.preventDefault();
  const options = { capture: true };
  for (const type of ["paste", "drop", "dragenter", "dragover"]) {
    target.addEventListener(type, refuse, options);
  }
  target.addEventListener(
    "beforeinput",
    (event) => {
      if (FOREIGN_INPUT_TYPES.has((event as InputEvent).inputType)) event.preventDefault();
    },
    options,
  );
  for (const type of ["mousedown", "mouseup", "auxclick"]) {
    target.addEventListener(
      type,
      (event) => {
        if ((event as MouseEvent).button === MIDDLE_BUTTON) event.preventDefault();
      },
      options,
    );
  }
}
