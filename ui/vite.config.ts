import { resolve } from "node:path";
import { defineConfig } from "vite";

// One page per window kind; each is loaded from the binary (Tauri's custom protocol).
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "safari15",
    rollupOptions: {
      input: {
        lock: resolve(__dirname, "lock.html"),
        enroll: resolve(__dirname, "enroll.html"),
        admin: resolve(__dirname, "admin.html"),
      },
    },
  },
  test: {
    environment: "node",
  },
});
