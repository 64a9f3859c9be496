import { describe, expect, it } from "vitest";
import { refuseForeignInput } from "./no-paste";

function fire(target: EventTarget, type: string, fields: Record<string, unknown> = {}): boolean {
  const event = new Event(type, { cancelable: true, bubbles: true });
  for (const [key, value] of Object.entries(fields)) Object.defineProperty(event, key, { value });
  target.dispatchEvent(event);
  return event.defaultPrevented;
}

describe("refuseForeignInput", () => {
  const page = new EventTarget();
  refuseForeignInput(page);

  it("refuses paste and drop", () => {
    for (const type of ["paste", "drop", "dragenter", "dragover"]) expect(fire(page, type)).toBe(true);
  });

  it("refuses insertions from the clipboard or a drag, and keeps typing", () => {
    expect(fire(page, "beforeinput", { inputType: "insertFromPaste" })).toBe(true);
    expect(fire(page, "beforeinput", { inputType: "insertFromDrop" })).toBe(true);
    expect(fire(page, "beforeinput", { inputType: "insertText" })).toBe(false);
    expect(fire(page, "beforeinput", { inputType: "deleteContentBackward" })).toBe(false);
  });

  it("refuses the middle button (X primary selection paste), not the touch or left button", () => {
    expect(fire(page, "mousedown", { button: 1 })).toBe(true);
    expect(fire(page, "auxclick", { button: 1 })).toBe(true);
    expect(fire(page, "mousedown", { button: 0 })).toBe(false);
  });
});
