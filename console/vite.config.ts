import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

// Served by the collector at /console/ from its binary (rust-embed of dist/): no CDN, no
// remote font, nothing inline (the collector's Content-Security-Policy allows only 'self').
export default defineConfig({
  base: "/console/",
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // No inline script or style may reach index.html: the policy would block it.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1024,
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});
