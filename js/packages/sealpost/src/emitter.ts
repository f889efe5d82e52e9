/** A minimal typed event emitter that works the same in browsers and Node.js. */

/** Listener map: event name -> argument type. */
// biome-ignore lint/suspicious/noExplicitAny: event payloads are typed by the subclass.
export class Emitter<Events extends Record<string, any>> {
  private readonly listeners = new Map<keyof Events, Set<(arg: never) => void>>();

  /** Adds a listener. */
  on<K extends keyof Events>(event: K, listener: (arg: Events[K]) => void): this {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (arg: never) => void);
    return this;
  }

  /** Removes a listener. */
  off<K extends keyof Events>(event: K, listener: (arg: Events[K]) => void): this {
    this.listeners.get(event)?.delete(listener as (arg: never) => void);
    return this;
  }

  /** Calls the listeners; a throwing listener does not stop the others. */
  protected emit<K extends keyof Events>(event: K, arg: Events[K]): void {
    for (const l of this.listeners.get(event) ?? []) {
      try {
        (l as (a: Events[K]) => void)(arg);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
