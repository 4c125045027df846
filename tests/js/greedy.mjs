// Greedy decoding with transformers.js from a `tinypretrain export --format onnx --with_past` folder; prints the new
// token ids as JSON. Usage: node greedy.mjs MODELS_ROOT FOLDER_NAME PROMPT EOS_ID MAX_NEW_TOKENS
import { AutoModelForCausalLM, AutoTokenizer, Tensor, env } from "@huggingface/transformers";

const [root, name, prompt, eos, maxNewTokens] = process.argv.slice(2);
env.localModelPath = root;
env.allowRemoteModels = false;
const tokenizer = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForCausalLM.from_pretrained(name, { dtype: "fp32" });
const ids = [Number(eos), ...tokenizer.encode(prompt, { add_special_tokens: false })];  // stories start after an EOS
const input_ids = new Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
const attention_mask = new Tensor("int64", BigInt64Array.from(ids.map(() => 1n)), [1, ids.length]);
const out = await model.generate({ input_ids, attention_mask, max_new_tokens: Number(maxNewTokens), do_sample: false });
console.log(JSON.stringify(out.tolist()[0].slice(ids.length).map(Number)));
