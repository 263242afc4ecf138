/** @type {import('next').NextConfig} */
const nextConfig = {
  reactStrictMode: true,
  // The API's address is read at request time (RENUM_API_URL), so one build serves any backend.
  poweredByHeader: false,
};

export default nextConfig;
